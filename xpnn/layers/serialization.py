"""Layer classes by name, for loading models: the built-ins plus those registered with
`register_keras_serializable` (Keras 3's decorator name), so that a model with a custom layer loads again.
"""

from __future__ import annotations

from collections.abc import Callable

from xpnn.layers.base import Layer

_REGISTERED: dict[str, type[Layer]] = {}


# Keras's other names for built-ins (xpnn.layers exports them too), so a config may use either
ALIASES = {
    "MaxPooling2D": "MaxPool2D",
    "AveragePooling2D": "AvgPool2D",
    "GlobalAvgPool2D": "GlobalAveragePooling2D",
    "GlobalMaxPool2D": "GlobalMaxPooling2D",
    "Convolution2D": "Conv2D",
    "SeparableConvolution2D": "SeparableConv2D",
}


def _builtin_classes() -> dict[str, type[Layer]]:
    """xpnn's own public layer classes (defined in xpnn.layers.*), by name and by Keras alias."""
    found: dict[str, type[Layer]] = {}
    todo = list(Layer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        public = not cls.__name__.startswith("_") and not cls.__name__.endswith("Base")
        if cls.__module__.startswith("xpnn.layers.") and public:
            found.setdefault(cls.__name__, cls)
    found.update({alias: found[name] for alias, name in ALIASES.items() if name in found})
    return found


def register_keras_serializable(package: str = "Custom", name: str | None = None) -> Callable[[type], type]:
    """Decorator: make a `Layer` subclass loadable by `load_model`, as keras.saving.register_keras_serializable.

    The class is found by its class name (what a saved model records) and by "package>name", Keras's key.
    A built-in's name cannot be taken; registering a name again replaces the earlier class (a re-run cell).
    """
    if not isinstance(package, str) or not package or ">" in package:
        raise ValueError(f"register_keras_serializable expects a package name without '>'; received {package!r}.")

    def register(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise TypeError(f"register_keras_serializable registers xpnn Layer subclasses; got {cls!r}.")
        short = name or cls.__name__
        builtins = _builtin_classes()
        for key in {cls.__name__, short}:
            if key in builtins and builtins[key] is not cls:
                raise ValueError(f"{key!r} is a built-in xpnn layer; register {cls.__qualname__} under another name.")
        _REGISTERED[cls.__name__] = cls
        _REGISTERED[short] = cls
        _REGISTERED[f"{package}>{short}"] = cls
        cls.registered_name = f"{package}>{short}"  # type: ignore[attr-defined]
        return cls

    return register


def layer_classes() -> dict[str, type[Layer]]:
    """{class name: class} for every built-in layer (Keras aliases included) and every registered one."""
    return {**_builtin_classes(), **_REGISTERED}
