"""Layer classes by name, for loading models: the built-ins plus those registered with
`register_keras_serializable` (Keras 3's decorator name), so that a model with a custom layer loads again.
"""

from __future__ import annotations

from collections.abc import Callable

from xpnn.layers.base import Layer

_REGISTERED: dict[str, type[Layer]] = {}


def _builtin_classes() -> dict[str, type[Layer]]:
    import xpnn.layers as layers  # the package, fully imported by the time anyone asks

    return {
        name: obj
        for name in layers.__all__
        if isinstance(obj := getattr(layers, name), type) and issubclass(obj, Layer) and obj is not Layer
    }


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
