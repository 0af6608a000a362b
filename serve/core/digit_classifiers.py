"""The digits API's models: the classifier a request names, or the server's default one.

A digits request may leave its model out. The model it then gets is declared, never guessed from
file names:

- `--default-model NAME` (ServerConfig.default_model): that model. While it is not served (not yet
  loaded in explicit mode, or unloaded) such requests get NOT_FOUND, as a request naming it would.
- otherwise, the first digit classifier in the order the models were given (the --model files in
  the order of the flags, a folder's files by name, or a repository's models by name, then those
  loaded later, in the order they were loaded) that is not a variant of another model: export's
  cards declare lenet.int8 and lenet.opt `variant_of` lenet, so lenet answers. With only variants,
  the first of them; with one classifier, that one.

A digit classifier is a model whose card says it classifies images; the others (feature maps,
third-party models without a card) are served through the KServe v2 API only.
"""
from __future__ import annotations

from contracts.errors import InvalidInput, ModelNotFound
from serve.core.served_models import ServedModels, ServedVersion


class DigitClassifiers:
    def __init__(self, served: ServedModels, default_model: str = "") -> None:
        self._served = served
        self.default_model = default_model

    def default(self) -> ServedVersion | None:
        """The newest version of the default classifier; None when there is none to serve."""
        if self.default_model:
            return self._served.served(self.default_model)
        classifiers = [served for served in self._served.newest() if served.model.classifies_images]
        originals = [served for served in classifiers if served.model.card.variant_of is None]
        return (originals or classifiers or [None])[0]

    def classifier(self, name: str, version: str = "") -> ServedVersion:
        """The classifier a call uses (held as `with ...:` like any served version): `name`, or the default."""
        if not name:
            served = self.default()
            if served is None:
                raise ModelNotFound(
                    "this server has no digit classifier with a model card; use the KServe v2 API for its models: "
                    + (", ".join(self._served.names()) or "none loaded")
                )
            if version and version != served.model.version:
                return self._checked(self._served.served(served.model.name, version))
            return self._checked(served)
        return self._checked(self._served.served(name, version))

    @staticmethod
    def _checked(served: ServedVersion) -> ServedVersion:
        model = served.model
        if not model.classifies_images:
            kind = "a third-party model without a model card" if model.card is None else f"a {model.task} model"
            raise InvalidInput(
                f"model {model.name!r} is {kind}, not a digit classifier: use it through the KServe v2 API (ModelInfer)"
            )
        return served
