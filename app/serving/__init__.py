"""The online pipeline, as small stages: encode → blend → retrieve → rerank → filter.

The service and the offline evaluator both call `pipeline.Recommender`; there is one
implementation of each stage.
"""
