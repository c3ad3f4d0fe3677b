"""The model zoo: load (:mod:`.loader`), the card and architecture registry,
downloads, checkpoint converters, model cards and the plain-Keras export.

Re-exports nothing, so that importing :mod:`kdzoo.zoo.registry` (every model
family does) stays light; the public names are ``kdzoo.load``,
``kdzoo.list_models``, ``kdzoo.model_info`` and ``kdzoo.to_plain_keras``."""
