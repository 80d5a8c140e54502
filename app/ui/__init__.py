"""The inspector page's static files (`static/`), shipped as package data and served at /ui."""
