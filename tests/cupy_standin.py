"""A stand-in for `cupy` over NumPy that enforces CuPy's rules, so the GPU path can be proven on a CPU machine.

Device arrays (`ndarray`) wrap a NumPy array that plays device memory. They behave as CuPy's do where it
matters for correctness:
- implicit conversion to a host array raises, as in CuPy (`numpy.asarray(x)`, `numpy` functions that would
  need one): "Implicit conversion to a NumPy array is not allowed";
- host `numpy.ndarray`s in operations with device arrays (operators, `cupy.*` functions, kernels) raise
  `TypeError: Unsupported type`, as in CuPy; indices and assigned values may be host arrays (CuPy uploads them);
- reductions return 0-d device arrays, never host scalars;
- `ElementwiseKernel` checks its arguments as CuPy does (device arrays only, one dtype per type letter,
  output shape = broadcast input shape) and runs the kernel's NumPy twin: kernel "xpnn_<name>" runs
  `xpnn.backends.numpy_backend.<name>` with the kernel's parameters passed by name;
- every host synchronisation is counted with the line that caused it (`log`): explicit reads (`get`,
  `asnumpy`), implicit reads (`float()`, `int()`, `bool()`, `item()`, `tolist()`, printing), stream and
  device synchronisation, and boolean-mask indexing (its size is only known on the host). Uploads
  (host → device copies) are counted apart: they do not wait for the device, but a per-step upload is slow.

CuPy allows implicit scalar reads (`float(x)` syncs and reads); so does the stand-in, counting them.
`XPNN_STANDIN_STRICT=1` (or `strict = True`) makes them raise instead, to find every one.

What it cannot check: bit-level rounding of real kernels (FMA contraction, float32 flush-to-zero), which
`scripts/check_cuda_kernels.py` covers by compiling the kernels with NVRTC; timing and memory limits.

Install for one test with `install(monkeypatch)`; `pytest --cupy-standin` installs it for the whole session.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
import types
from dataclasses import dataclass, field
from typing import Any

import numpy

_np = numpy
_HERE = os.path.abspath(__file__)

strict = os.environ.get("XPNN_STANDIN_STRICT", "") not in ("", "0")


# ---- the record of host synchronisations -----------------------------------------------------------------
@dataclass
class Event:
    kind: str  # "get", "implicit", "synchronize", "mask", "upload"
    where: str  # file:line (function) of the first frame outside the stand-in and NumPy


@dataclass
class Log:
    """What crossed between host and device, in order."""

    events: list[Event] = field(default_factory=list)

    def clear(self) -> None:
        self.events.clear()

    @property
    def syncs(self) -> list[Event]:
        """Every event that makes the host wait for the device (all but uploads)."""
        return [e for e in self.events if e.kind != "upload"]

    @property
    def uploads(self) -> list[Event]:
        return [e for e in self.events if e.kind == "upload"]

    def mark(self) -> int:
        """A position in the log, for `since`."""
        return len(self.events)

    def since(self, mark: int) -> list[Event]:
        return self.events[mark:]


log = Log()


def _where() -> str:
    for frame in reversed(traceback.extract_stack()[:-1]):
        name = os.path.abspath(frame.filename)
        if name != _HERE and f"{os.sep}numpy{os.sep}" not in name:
            return f"{os.path.relpath(name)}:{frame.lineno} ({frame.name})"
    return "?"


def _record(kind: str) -> None:
    if strict and kind == "implicit":
        raise TypeError(
            "implicit device-to-host read (float(), int(), bool(), item(), tolist() or printing of a device "
            f"array) at {_where()}: read through backend.to_host / cupy.asnumpy, once, outside the steps."
        )
    log.events.append(Event(kind, _where()))


# ---- device arrays ----------------------------------------------------------------------------------------
def _unsupported(value: Any) -> TypeError:
    return TypeError(
        f"Unsupported type {type(value)}: a host numpy.ndarray met a device array "
        "(CuPy refuses to mix them; upload it with cupy.asarray first)."
    )


def _unwrap(value: Any) -> Any:
    """NumPy data of a device array (recursively in lists and tuples); host arrays are refused."""
    if isinstance(value, ndarray):
        return _on_current_device(value)._a
    if isinstance(value, _np.ndarray):
        raise _unsupported(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    return value


def _on_current_device(value: ndarray) -> ndarray:
    """`value`, if it lives on the current device (CuPy refuses arrays of another GPU without peer access)."""
    if value._dev != _current_device:
        raise ValueError(
            f"The device where the array resides ({value._dev}) is different from the current device "
            f"({_current_device}). Peer access is unavailable between these devices."
        )
    return value


def _unwrap_index(value: Any) -> Any:
    """An index: device arrays, or host arrays and lists (uploaded, as CuPy does); boolean masks sync."""
    if isinstance(value, tuple):
        return tuple(_unwrap_index(v) for v in value)
    if isinstance(value, ndarray):
        if value.dtype == _np.bool_:
            _record("mask")
        return value._a
    if isinstance(value, (_np.ndarray, list)):
        _record("upload")
        arr = _np.asarray(value)
        if arr.dtype == _np.bool_:
            _record("mask")
        return arr
    return value


def _wrap(value: Any) -> Any:
    """Device arrays for NumPy results: arrays and NumPy scalars (CuPy returns 0-d arrays), in tuples too."""
    if isinstance(value, _np.ndarray):
        return ndarray._from(value)
    if isinstance(value, _np.generic):
        return ndarray._from(_np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _device_fn(fn: Any, name: str) -> Any:
    """`fn` (a NumPy function or ufunc) over device arrays: host arrays refused, results on the device."""

    def call(*args, **kwargs):
        return _wrap(fn(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"cupy.{name} (stand-in over numpy.{name})"
    return call


class MemoryPointer:
    """`x.data`: the address of the first element, as CuPy's `MemoryPointer.ptr`."""

    def __init__(self, array: _np.ndarray) -> None:
        self.ptr = array.__array_interface__["data"][0]


class ndarray:  # noqa: N801 - CuPy's name
    """A device array: NumPy data that refuses to leave for the host implicitly."""

    __slots__ = ("_a", "_dev")
    __array_priority__ = 100.0
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None, order: str = "C"):
        self._a, self._dev = _np.empty(shape, dtype=dtype, order=order), _current_device

    @classmethod
    def _from(cls, array: _np.ndarray) -> ndarray:
        obj = cls.__new__(cls)
        obj._a, obj._dev = array, _current_device  # on the device current when it was made, as in CuPy
        return obj

    # -- leaving the device
    def get(self, stream: Any = None, order: str = "C", out: Any = None) -> _np.ndarray:
        """A host copy (a synchronisation)."""
        _record("get")
        if out is not None:
            _np.copyto(out, self._a)
            return out
        return _np.array(self._a, order=order, copy=True)

    def set(self, arr: _np.ndarray, stream: Any = None) -> None:
        _record("upload")
        _np.copyto(self._a, arr)

    def __array__(self, dtype: Any = None, copy: Any = None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy "
            "array explicitly."
        )

    def _read(self) -> _np.ndarray:
        _record("implicit")
        return self._a

    def __float__(self) -> float:
        return float(self._read())

    def __int__(self) -> int:
        return int(self._read())

    def __index__(self) -> int:
        if self.ndim != 0 or self.dtype.kind not in "iub":
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return int(self._read())

    def __complex__(self) -> complex:
        return complex(self._read())

    def __bool__(self) -> bool:
        return bool(self._read())

    def item(self, *args: Any) -> Any:
        return self._read().item(*args)

    def tolist(self) -> Any:
        return self._read().tolist()

    def __repr__(self) -> str:
        return repr(self._read())

    def __str__(self) -> str:
        return str(self._read())

    def __format__(self, spec: str) -> str:
        return format(self._read(), spec)

    def tobytes(self, order: str = "C") -> bytes:
        return self._read().tobytes(order)

    # -- NumPy protocols: NumPy functions on device arrays go to the stand-in's functions of the same name
    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        fn = getattr(ufunc, method)
        return _wrap(fn(*_unwrap(inputs), **{k: _unwrap(v) for k, v in kwargs.items()}))

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        mine = getattr(_module(), func.__name__, None)
        if mine is None:
            return NotImplemented
        return mine(*args, **kwargs)

    # -- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    strides = property(lambda self: self._a.strides)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._from(self._a.T))
    data = property(lambda self: MemoryPointer(self._a))
    device = property(lambda self: Device(self._dev))

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield self[i]

    def __getitem__(self, index: Any) -> ndarray:
        return _wrap(self._a[_unwrap_index(index)])

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(value, (_np.ndarray, list)):
            _record("upload")  # CuPy uploads an assigned host array
            self._a[_unwrap_index(index)] = _np.asarray(value)
        else:
            self._a[_unwrap_index(index)] = _unwrap(value)

    def __getattr__(self, name: str) -> Any:
        if name == "_a" or name.startswith("__") or name in ("ctypes", "tofile", "dump", "dumps"):
            raise AttributeError(name)  # no array interface, buffer or pointer for NumPy to read the host data by
        attr = getattr(self._a, name)  # methods: reshape, sum, argmax, astype, view, fill, ...
        return _device_fn(attr, name) if callable(attr) else _wrap(attr)

    def __dir__(self):
        return sorted(set(dir(type(self))) | set(dir(self._a)))


def _binary(name: str):
    op = getattr(_np.ndarray, name)

    def method(self, other):
        if isinstance(other, _np.ndarray):
            raise _unsupported(other)
        return _wrap(op(_unwrap(self), _unwrap(other)))

    method.__name__ = name
    return method


def _inplace(name: str):
    op = getattr(_np.ndarray, name)

    def method(self, other):
        if isinstance(other, _np.ndarray):
            raise _unsupported(other)
        op(_unwrap(self), _unwrap(other))
        return self

    method.__name__ = name
    return method


for _name in (
    "add sub mul truediv floordiv mod pow matmul and or xor lshift rshift lt le eq ne gt ge".split()
    + "radd rsub rmul rtruediv rfloordiv rmod rpow rmatmul rand ror rxor".split()
):
    setattr(ndarray, f"__{_name}__", _binary(f"__{_name}__"))
for _name in "iadd isub imul itruediv ifloordiv imod ipow iand ior ixor".split():
    setattr(ndarray, f"__{_name}__", _inplace(f"__{_name}__"))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(ndarray, f"__{_name}__", (lambda op: lambda self: _wrap(op(self._a)))(getattr(_np.ndarray, f"__{_name}__")))


# ---- module functions ----------------------------------------------------------------------------------------
def asarray(a: Any, dtype: Any = None, order: Any = None, *, blocking: bool = False) -> ndarray:
    """A device array: no copy for a device array of that dtype, else an upload of host data."""
    if isinstance(a, ndarray):
        return ndarray._from(_np.asarray(a._a, dtype=dtype, order=order))
    _record("upload")
    return ndarray._from(_np.array(a, dtype=dtype, order=order, copy=True))  # device memory is its own


def array(a: Any, dtype: Any = None, copy: bool = True, order: str = "K", ndmin: int = 0) -> ndarray:
    if isinstance(a, ndarray):
        return ndarray._from(_np.array(a._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    _record("upload")
    return ndarray._from(_np.array(a, dtype=dtype, copy=True, order=order, ndmin=ndmin))


def asnumpy(a: Any, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> _np.ndarray:
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args: Any) -> types.ModuleType:
    return _module() if any(isinstance(a, ndarray) for a in args) else _np


class _MemoryPool:
    """`cupy.get_default_memory_pool()`: nothing to free on the stand-in."""

    def free_all_blocks(self) -> None: ...

    def used_bytes(self) -> int:
        return 0

    def total_bytes(self) -> int:
        return 0


_pool = _MemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _pool


def get_default_pinned_memory_pool() -> _MemoryPool:
    return _pool


# ---- ElementwiseKernel ---------------------------------------------------------------------------------------
_C_TYPES = {
    "float": _np.float32, "double": _np.float64, "float32": _np.float32, "float64": _np.float64,
    "int32": _np.int32, "int64": _np.int64, "bool": _np.bool_, "int": _np.int32, "uint8": _np.uint8,
}  # fmt: skip

twins: Any = None  # the module whose functions run for "xpnn_<name>" kernels (default xpnn.backends.numpy_backend)
kernels_built: list[ElementwiseKernel] = []  # every kernel made, for checks of their sources and options


def _parse_params(text: str) -> list[tuple[str, str, bool]]:
    """'T dout, raw T x' -> [("T", "dout", False), ("T", "x", True)]."""
    params = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        words = part.split()
        raw = words[0] == "raw"
        ctype, name = words[-2], words[-1]
        if not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ValueError(f"bad kernel parameter {part!r}")
        params.append((ctype, name, raw))
    return params


# ---- the kernel's own C operation, evaluated elementwise in NumPy ----------------------------------------
_TOKEN = re.compile(
    r"\s*(?:(?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+(?:[eE][-+]?\d+)?)[fF]?"
    r"|(?P<name>[A-Za-z_]\w*)|(?P<op><=|>=|==|!=|&&|\|\||[-+*/]=|[-+*/<>?:()=!;,]))"
)
_FUNCS = {"sqrt": "sqrt", "exp": "exp", "log": "log", "fabs": "abs", "abs": "abs", "max": "fmax", "min": "fmin"}
_BINARY = [("||", "|"), ("&&", "&"), ("==", "=="), ("!=", "!="), ("<", "<"), (">", ">"), ("<=", "<="),
           (">=", ">="), ("+", "+"), ("-", "-"), ("*", "*"), ("/", "/")]  # fmt: skip
_LEVELS = [("||",), ("&&",), ("==", "!="), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/")]


class _COperation:
    """A kernel's operation (assignments of C expressions) compiled to NumPy: no FMA contraction, IEEE
    division and sqrt, as NVRTC builds it with --fmad=false; float32 denormals are kept (CuPy flushes them)."""

    def __init__(self, text: str, type_names: set[str]) -> None:
        self.tokens, pos, text = [], 0, text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or not m.lastgroup:
                raise NotImplementedError(f"the stand-in cannot read kernel operation {text!r} at {text[pos:]!r}")
            self.tokens.append((m.lastgroup, m.group(m.lastgroup)))
            pos = m.end()
        self.types, self.pos, self.lines = type_names, 0, []
        while self.pos < len(self.tokens):
            self.lines.append(self._statement())
        self.code = compile("\n".join(self.lines), "<kernel operation>", "exec")

    def _peek(self) -> str | None:
        return self.tokens[self.pos][1] if self.pos < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> str:
        kind, tok = self.tokens[self.pos]
        if expected is not None and tok != expected:
            raise NotImplementedError(f"kernel operation: expected {expected!r}, got {tok!r}")
        self.pos += 1
        return tok

    def _statement(self) -> str:
        target, op = self._take(), self._take()
        value = self._expr()
        if self.pos < len(self.tokens):  # CuPy ends the last statement itself
            self._take(";")
        if op == "=":
            return f"env[{target!r}] = _as(env, {target!r}, {value})"
        return f"env[{target!r}] = _as(env, {target!r}, env[{target!r}] {op[0]} ({value}))"

    def _expr(self) -> str:
        cond = self._binary(0)
        if self._peek() != "?":
            return cond
        self._take("?")
        a = self._expr()
        self._take(":")
        return f"_np.where({cond}, {a}, {self._expr()})"

    def _binary(self, level: int) -> str:
        if level == len(_LEVELS):
            return self._unary()
        left = self._binary(level + 1)
        while self._peek() in _LEVELS[level]:
            op = dict(_BINARY)[self._take()]
            left = f"({left} {op} {self._binary(level + 1)})"
        return left

    def _unary(self) -> str:
        tok = self._peek()
        if tok in ("-", "+", "!"):
            self._take()
            return f"({'~' if tok == '!' else tok}{self._unary()})"
        ahead = [t for _, t in self.tokens[self.pos + 1 : self.pos + 3]]
        if tok == "(" and len(ahead) == 2 and ahead[0] in self.types | set(_C_TYPES) and ahead[1] == ")":
            self.pos += 1
            ctype = self._take()
            self._take(")")
            return f"_cast({ctype!r}, {self._unary()})"
        return self._primary()

    def _primary(self) -> str:
        kind, tok = self.tokens[self.pos]
        self.pos += 1
        if tok == "(":
            inner = self._expr()
            self._take(")")
            return f"({inner})"
        if kind == "num":
            return tok
        if self._peek() == "(":
            self._take("(")
            args = [self._expr()]
            while self._peek() == ",":
                self._take(",")
                args.append(self._expr())
            self._take(")")
            return f"_np.{_FUNCS[tok]}({', '.join(args)})"
        return f"env[{tok!r}]"

    def run(self, values: dict[str, Any], dtypes: dict[str, Any], types_: dict[str, Any]) -> dict[str, _np.ndarray]:
        """`values` (parameter -> array or scalar) after the operation; `dtypes` per parameter, `types_` per letter."""
        env = {k: (_np.array(v, copy=True) if isinstance(v, _np.ndarray) else v) for k, v in values.items()}

        def cast(ctype: str, x: Any) -> Any:
            return _np.asarray(x).astype(_C_TYPES.get(ctype) or types_[ctype])

        def as_param(env: dict, name: str, x: Any) -> Any:
            return _np.asarray(x).astype(dtypes[name]) if name in dtypes else x

        with _np.errstate(all="ignore"):
            exec(self.code, {"_np": _np, "_cast": cast, "_as": as_param, "env": env})
        return env


def _same_bits(a: _np.ndarray, b: _np.ndarray) -> _np.ndarray:
    """Elementwise: equal values with equal signs (so -0 differs from +0), or both NaN."""
    a, b = _np.asarray(a), _np.asarray(b)
    return ((a == b) & (_np.signbit(a) == _np.signbit(b))) | (_np.isnan(a) & _np.isnan(b))


class ElementwiseKernel:
    """CuPy's ElementwiseKernel: checks arguments as CuPy does, then runs the kernel's NumPy twin."""

    def __init__(
        self,
        in_params: str,
        out_params: str,
        operation: str,
        name: str = "kernel",
        reduce_dims: bool = True,
        preamble: str = "",
        no_return: bool = False,
        return_tuple: bool = False,
        loop_prep: str = "",
        after_loop: str = "",
        options: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        self.in_params, self.out_params = _parse_params(in_params), _parse_params(out_params)
        self.in_text, self.out_text = in_params, out_params
        self.operation, self.name, self.preamble = operation, name, preamble
        self.options = tuple(options)
        self.no_return, self.return_tuple = no_return, return_tuple
        self.calls: set[tuple[tuple[str, str, str], ...]] = set()  # (parameter, "array"/"scalar", dtype) per call
        kernels_built.append(self)

    def _twin(self):
        module = twins
        if module is None:
            from xpnn.backends import numpy_backend as module
        short = self.name.removeprefix("xpnn_")
        fn = getattr(module, short, None)
        if fn is None:
            raise NotImplementedError(f"the stand-in runs kernel {self.name!r} through a twin {short!r}; none found")
        return fn

    def __call__(self, *args: Any, size: int | None = None, block_size: Any = None, stream: Any = None) -> Any:
        nin, nout = len(self.in_params), len(self.out_params)
        if len(args) not in (nin, nin + nout):
            raise TypeError(f"Wrong number of arguments for {self.name!r}; expected {nin} or {nin + nout}")
        params = self.in_params + self.out_params[: len(args) - nin]
        types_: dict[str, Any] = {}
        for (ctype, pname, _), value in zip(params, args):
            if isinstance(value, _np.ndarray):
                raise _unsupported(value)
            if isinstance(value, ndarray):
                _on_current_device(value)
            if ctype in _C_TYPES:
                continue
            if isinstance(value, (ndarray, _np.generic)):  # Python scalars take the type of the others
                dtype = _np.dtype(value.dtype)
                if types_.setdefault(ctype, dtype) != dtype:
                    raise TypeError(f"Type is mismatched. {pname} {types_[ctype]} {dtype} (kernel {self.name})")
        for ctype, pname, _ in self.out_params[len(args) - nin :]:
            if ctype not in _C_TYPES and ctype not in types_:
                raise TypeError(f"Cannot determine the output type {ctype} of {pname} (kernel {self.name})")
        arrays = [a._a for a in args if isinstance(a, ndarray)]
        shape = _np.broadcast_shapes(*(a.shape for a, (_, _, raw) in zip(args[:nin], self.in_params)
                                      if isinstance(a, ndarray) and not raw))  # fmt: skip
        values: dict[str, Any] = {}
        for (ctype, pname, _), value in zip(params, args):
            dtype = _C_TYPES.get(ctype) or types_[ctype]
            if isinstance(value, ndarray):
                if value.dtype != dtype:
                    raise TypeError(f"Type is mismatched. {pname} {dtype} {value.dtype} (kernel {self.name})")
                values[pname] = value._a
            else:
                values[pname] = _np.dtype(dtype).type(value)
        outs = list(args[nin:])
        for (_, pname, raw), out in zip(self.out_params, outs):
            if not isinstance(out, ndarray):
                raise TypeError(f"Output arguments type must be cupy.ndarray (kernel {self.name}, {pname})")
            if not raw and out.shape != shape and arrays:
                raise ValueError(f"Out shape is mismatched: {pname} {out.shape} vs {shape} (kernel {self.name})")
        for ctype, _, _ in self.out_params[len(outs) :]:
            new = ndarray._from(_np.empty(shape, dtype=_C_TYPES.get(ctype) or types_[ctype]))
            outs.append(new)
        described = {**values, **{p: o._a for (_, p, _), o in zip(self.out_params, outs)}}
        kinds = ((p, "array" if isinstance(v, _np.ndarray) else "scalar", v.dtype.name) for p, v in described.items())
        self.calls.add(tuple(kinds))
        params_dtypes = {p: _np.dtype(_C_TYPES.get(c) or types_[c]) for c, p, _ in self.in_params + self.out_params}
        op_outs = {p: o._a for (_, p, _), o in zip(self.out_params, outs)}
        by_operation = _COperation(self.operation, set(types_)).run({**values, **op_outs}, params_dtypes, types_)
        twin = self._twin()
        accepted = set(twin.__code__.co_varnames[: twin.__code__.co_argcount])
        with _np.errstate(all="ignore"):  # a GPU kernel never warns
            result = twin(**{k: v for k, v in values.items() if k in accepted})
        returned = [pname for _, pname, _ in self.out_params if pname not in accepted]
        if returned:
            results = result if len(returned) > 1 else (result,)
            for pname, res in zip(returned, results):
                i = [p for _, p, _ in self.out_params].index(pname)
                _np.copyto(outs[i]._a, res)
        for (_, pname, _), out in zip(self.out_params, outs):
            expected = _np.broadcast_to(by_operation[pname], out.shape)
            same = _same_bits(out._a, expected)
            if not same.all():
                i = tuple(int(j) for j in _np.argwhere(~same)[0])
                inputs = {p: values[p][i] if _np.ndim(values[p]) else values[p] for _, p, _ in self.in_params}
                raise AssertionError(
                    f"kernel {self.name} and its NumPy twin differ: {pname}[{i}] is {out._a[i]!r} by the twin but "
                    f"{expected[i]!r} by the kernel's operation {self.operation.strip()!r}, for inputs {inputs}"
                )
        if self.no_return:
            return None
        if len(outs) == 1 and not self.return_tuple:
            return outs[0]
        return tuple(outs)


# ---- cupy.cuda ------------------------------------------------------------------------------------------------
class CUDARuntimeError(RuntimeError):
    pass


class Stream:
    null: Stream

    def __init__(self, null: bool = False, non_blocking: bool = False) -> None:
        self.ptr = 0

    def synchronize(self) -> None:
        _record("synchronize")

    @property
    def done(self) -> bool:
        _record("synchronize")
        return True

    def record(self, event: Any = None) -> Any:
        return types.SimpleNamespace(synchronize=lambda: _record("synchronize"), done=True)

    def use(self) -> Stream:
        return self

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: Any) -> None: ...


Stream.null = Stream(null=True)


class Device:
    compute_capability = "90"

    def __init__(self, device: int | None = None) -> None:
        self.id = _current_device if device is None else int(device)  # CuPy: Device() is the current one
        if self.id >= runtime.getDeviceCount():
            raise CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")

    def use(self) -> None:
        global _current_device
        _current_device = self.id

    def synchronize(self) -> None:
        _record("synchronize")

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: Any) -> None: ...


_current_device = 0


device_count = 1  # what cuda.runtime.getDeviceCount() says; a test may make it 2 (e.g. one GPU per rank)


def _device_count() -> int:
    return device_count


def _device_synchronize() -> None:
    _record("synchronize")


runtime = types.SimpleNamespace(
    getDeviceCount=lambda: _device_count(),
    getDevice=lambda: _current_device,
    setDevice=lambda i: Device(i).use(),
    deviceSynchronize=_device_synchronize,
    getDeviceProperties=lambda i: {"name": b"CuPy stand-in (NumPy)", "totalGlobalMem": 80 << 30},
    runtimeGetVersion=lambda: 12090,
    driverGetVersion=lambda: 12090,
    memGetInfo=lambda: (80 << 30, 80 << 30),
    CUDARuntimeError=CUDARuntimeError,
)
nvrtc = types.SimpleNamespace(getVersion=lambda: (12, 9))
nccl = types.SimpleNamespace(available=False)  # as CuPy without libnccl: the module imports, `available` is False


def _cublas_handle() -> int:
    return 1


device = types.SimpleNamespace(get_cublas_handle=lambda: _cublas_handle(), Device=Device)


def _build_modules() -> dict[str, types.ModuleType]:
    """sys.modules entries: cupy, cupy.cuda (runtime, nvrtc, nccl, device), cupy.lib.stride_tricks, cupy.random."""
    me = sys.modules[__name__]
    cupy = types.ModuleType("cupy", __doc__)
    cupy.__file__ = __file__
    cupy.__version__ = "14.0.0+standin"
    cupy.__standin__ = me
    for name in ("ndarray", "asarray", "array", "asnumpy", "get_array_module", "get_default_memory_pool",
                 "get_default_pinned_memory_pool", "ElementwiseKernel"):  # fmt: skip
        setattr(cupy, name, getattr(me, name))

    def fallback(name: str) -> Any:
        attr = getattr(_np, name)  # AttributeError for what NumPy lacks too
        if isinstance(attr, (type, _np.dtype, float, int, types.ModuleType)) or attr is None:
            return attr  # dtypes (float32, intp), constants (inf, newaxis)
        if callable(attr):
            fn = _device_fn(attr, name)
            setattr(cupy, name, fn)
            return fn
        return attr

    cupy.__getattr__ = fallback  # PEP 562: everything else is NumPy's, over device arrays
    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime, cuda.nvrtc, cuda.nccl, cuda.device = runtime, nvrtc, nccl, device
    cuda.Stream, cuda.Device = Stream, Device
    cuda.get_current_stream = lambda device=None: Stream.null
    cuda.is_available = lambda: runtime.getDeviceCount() > 0
    cupy.cuda = cuda
    lib = types.ModuleType("cupy.lib")
    lib.stride_tricks = types.ModuleType("cupy.lib.stride_tricks")
    lib.stride_tricks.as_strided = lambda x, shape=None, strides=None: ndarray._from(
        _np.lib.stride_tricks.as_strided(_unwrap(x), shape, strides)
    )
    cupy.lib = lib
    random = types.ModuleType("cupy.random")
    random.default_rng = lambda seed=None: _Generator(_np.random.default_rng(seed))
    cupy.random = random
    # cupyx.scipy.special's erf/erfc (CUDA's, within 2 ulp): here xpnn's NumPy twins over device arrays
    from xpnn.backends import numpy_backend

    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = types.ModuleType("cupyx.scipy.special")
    cupyx.scipy.special.erf = _device_fn(numpy_backend.erf, "erf")
    cupyx.scipy.special.erfc = _device_fn(numpy_backend.erfc, "erfc")
    return {
        "cupy": cupy, "cupy.cuda": cuda, "cupy.cuda.nccl": nccl, "cupy.cuda.runtime": runtime,
        "cupy.cuda.nvrtc": nvrtc, "cupy.cuda.device": device, "cupy.lib": lib,
        "cupy.lib.stride_tricks": lib.stride_tricks, "cupy.random": random,
        "cupyx": cupyx, "cupyx.scipy": cupyx.scipy, "cupyx.scipy.special": cupyx.scipy.special,
    }  # fmt: skip


class _Generator:
    """cupy.random.default_rng: draws on the device (here NumPy's PCG64; CuPy's streams differ)."""

    def __init__(self, gen: _np.random.Generator) -> None:
        self._gen = gen

    def __getattr__(self, name: str) -> Any:
        return _device_fn(getattr(self._gen, name), name)


_modules: dict[str, types.ModuleType] | None = None


def _module() -> types.ModuleType:
    global _modules
    if _modules is None:
        _modules = _build_modules()
    return _modules["cupy"]


def modules() -> dict[str, types.ModuleType]:
    _module()
    assert _modules is not None
    return _modules


def install(monkeypatch: Any = None) -> types.ModuleType:
    """Put the stand-in in sys.modules as `cupy` (through `monkeypatch` when given, undone after the test).

    xpnn's CuPy kernels module is dropped from sys.modules so that its next import builds on the stand-in.
    """
    entries = modules()
    for key, mod in entries.items():
        if monkeypatch is None:
            sys.modules[key] = mod
        else:
            monkeypatch.setitem(sys.modules, key, mod)
    package = sys.modules.get("xpnn.backends")  # `from xpnn.backends import cupy_backend` reads this attribute first
    if monkeypatch is None:
        sys.modules.pop("xpnn.backends.cupy_backend", None)
        if package is not None and hasattr(package, "cupy_backend"):
            delattr(package, "cupy_backend")
    else:
        monkeypatch.delitem(sys.modules, "xpnn.backends.cupy_backend", raising=False)
        if package is not None:
            monkeypatch.delattr(package, "cupy_backend", raising=False)
    return entries["cupy"]
