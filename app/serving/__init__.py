"""The online pipeline, as small stages: encode → blend → retrieve → filter → rerank.

The service and the offline evaluator both call `pipeline.Recommender`; there is one
implementation of each stage.
"""
