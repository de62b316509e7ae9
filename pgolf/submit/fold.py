"""Specialise the bundle to one configuration: fold its switches into the code, drop the code paths it never takes.

A configuration field is either

- a **switch** (every ``bool`` and ``Literal[...]`` field: ``model.mlp``, ``model.smear_gate``,
  ``qat.enabled``, ``export.quantizer``, ``export.compressor``, ``averaging.mode``, ``eval.window_rule`` ...),
  folded to the configuration's value wherever the code reads it; or
- an **on/off number** (:data:`ON_OFF`: ``model.bigram_buckets``, ``eval.stride`` ...; 0 or empty = off),
  folded only where the code asks whether it is on (an ``if``/ternary/``and``/``or``/``not`` test, or a
  comparison with 0): its value stays a hyperparameter, its on/off state is folded; or
- a **hyperparameter** (every other number, string and tuple), never folded: the script reads it from its
  configuration, which the official environment names override.

The generated script refuses to run when the environment turns a folded switch (or an on/off number's
state) to another value (:func:`pgolf.submit.entry.check_folded`): it holds only the code of the value it
was generated with.

What is folded (:func:`fold_module`, on each core module's tree, before the modules are bundled):

1. **Reads of switches** become constants. A read is ``X.field`` where ``X`` is known to hold a section of
   the run's configuration: a parameter annotated with a section class (``cfg: ModelConfig``) or ``Config``
   (then ``cfg.model`` is a ModelConfig), a local assigned only from such expressions (``o = cfg.optim``,
   ``cfg, t = self.cfg, self.cfg.train``), or ``self.attr`` where every assignment of ``self.attr`` in the
   class is such an expression (``self.cfg = cfg``). A parameter or name of any other annotation
   (``QATConfig | None``) or reassigned otherwise is left alone. Sound because nothing in the bundled
   core builds a second configuration object of its own (:func:`check_no_other_configs` verifies it at
   generation time); the configuration modules themselves (validation) are not folded.
   Derived switches (:data:`DERIVED`: ``QATConfig.own_quantizer``) fold too.
2. **Constant expressions**: ``not``, comparisons (``==``, ``!=``, ``in``, ``is`` ...), ``and``/``or`` (with
   Python's value semantics; only in a test is ``x and False`` folded to ``False``, for a side-effect-free
   ``x``), ternaries, and subscripts of a module's registry dict (``MLPS["relu2"]`` -> ``ReLU2MLP``) that
   nothing mutates.
3. **Dead statements**: an ``if``/``elif``/``else`` with a constant test keeps only its live branch;
   statements after a ``return``/``raise`` go.
4. **Local constants**: a function's local assigned once, at the function's top level, with a constant,
   and never stored again, is replaced by it (``smear = None`` -> ``if None is not None``), then folded.

Steps 2-4 run to a fixed point. Then, on the whole bundle (:func:`pgolf.submit.bundle_passes.fold_bundle`), to a fixed point:

5. **Constant arguments** (``bundle_passes.propagate_arguments``): a top-level function or class only ever called,
   whose every call gives a parameter the same constant (or leaves its constant default), reads it
   (``compress(raw, "zlib")``; ``train(cfg, dir)`` -> ``Trainer(..., resume=False)``).
6. **Instance constants** (``bundle_passes.propagate_instance_constants``): an attribute that a class's methods only
   assign one constant, and nothing else assigns, reads as it (``self.lm_head = None``).
7. **Uncallable methods** (``bundle_passes.drop_unused_methods``) of classes without a library base.

The bundler then drops the top-level definitions and registries nothing reads any more
(:func:`pgolf.submit.bundle._shake`). Not folded (left as they are, correct for every
value): switches passed on as plain values into objects of other types (``Block(xsa=...)`` tested per layer,
``QuantSpec.clip``), and reads through objects whose type is not known (see docs/submit.md).
"""

from __future__ import annotations

import ast
import copy
import typing
from dataclasses import dataclass
from typing import Any

from pgolf.core.config import _SECTION_TYPES, Config, _field_types

SECTIONS: dict[str, str] = {name: cls.__name__ for name, cls in _SECTION_TYPES.items()}  # model -> ModelConfig
CONFIG_CLASSES = {"Config", *SECTIONS.values()}
# Numbers (and tuples) whose zero (or emptiness) turns a technique off: their on/off state is folded.
ON_OFF = ("model.bigram_buckets", "model.xsa_last_n", "model.loop_layers", "model.loop_count",
          "optim.smear_beta2", "export.prune_frac", "eval.stride",
          # no environment name sets these: their on/off state never changes at run time
          "train.checkpoint_every", "eval.max_tokens", "schedule.warmdown_cap_frac", "model.proj_init_gain")
# Properties of a section computed from its switches alone: folded like a switch.
DERIVED = {("QATConfig", "own_quantizer"): "qat"}
# Modules whose reads are not folded: they build and validate configurations (also from the environment).
NOT_FOLDED = ("pgolf.core.config", "pgolf.core.config_env", "pgolf.submit.entry")


def switch_keys() -> list[str]:
    """The dotted keys of every switch: the ``bool`` and ``Literal[...]`` fields of the config tree."""
    out = []
    for sec, cls in _SECTION_TYPES.items():
        for name, tp in _field_types(cls).items():
            if tp is bool or typing.get_origin(tp) is typing.Literal:
                out.append(f"{sec}.{name}")
    return out


@dataclass(frozen=True)
class Folding:
    """One configuration's folded values."""
    switches: dict[str, Any]  # dotted key -> value (bool or str)
    on_off: dict[str, bool]  # dotted key -> whether it is on

    @property
    def key(self) -> str:
        return repr(sorted(self.switches.items())) + repr(sorted(self.on_off.items()))

    def constants(self) -> tuple[dict[tuple[str, str], Any], dict[tuple[str, str], bool]]:
        """(section class, field) -> folded value, for switches (with the derived ones) and on/off numbers."""
        exact = {(SECTIONS[k.split(".")[0]], k.split(".")[1]): v for k, v in self.switches.items()}
        for (cls, attr), sec in DERIVED.items():  # the section alone, with its switches (other fields: defaults)
            section = _SECTION_TYPES[sec](**{k.split(".")[1]: v for k, v in self.switches.items()
                                             if k.split(".")[0] == sec})
            exact[(cls, attr)] = getattr(section, attr)
        on = {(SECTIONS[k.split(".")[0]], k.split(".")[1]): v for k, v in self.on_off.items()}
        return exact, on


def folding_for(cfg: Config) -> Folding:
    def get(key: str) -> Any:
        sec, name = key.split(".")
        return getattr(getattr(cfg, sec), name)
    return Folding({k: get(k) for k in switch_keys()}, {k: bool(get(k)) for k in ON_OFF})


# -- what a name holds ------------------------------------------------------------------------------------------
def _ann_class(ann: ast.expr | None) -> str | None:
    if isinstance(ann, ast.Name) and ann.id in CONFIG_CLASSES:
        return ann.id
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str) and ann.value in CONFIG_CLASSES:
        return ann.value
    return None


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) -> list[ast.arg]:
    a = fn.args
    return [*a.posonlyargs, *a.args, *a.kwonlyargs, *([a.vararg] if a.vararg else []), *([a.kwarg] if a.kwarg else [])]


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)


def _own_nodes(body: list[ast.stmt]):
    """Nodes of a scope's body, not descending into nested functions, lambdas or classes (their nodes are
    their own scope; their names are yielded so the caller sees them bound)."""
    stack = list(reversed(body))
    while stack:
        n = stack.pop()
        yield n
        if isinstance(n, _SCOPES):
            # decorators, defaults and bases belong to the enclosing scope
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                stack.extend(n.decorator_list + n.args.defaults + [d for d in n.args.kw_defaults if d])
            elif isinstance(n, ast.Lambda):
                stack.extend(n.args.defaults + [d for d in n.args.kw_defaults if d])
            else:
                stack.extend(n.decorator_list + n.bases + [k.value for k in n.keywords])
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(n))))


def _stored_names(body: list[ast.stmt]) -> set[str]:
    out = set()
    for n in _own_nodes(body):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Global, ast.Nonlocal)):
            out.update(n.names)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            out.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name.split(".")[0]) for a in n.names)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            out.add(n.name)
    return out


class _Typer:
    """The configuration class an expression holds, in a scope: ``env`` (name -> class) and, inside a
    method, ``self_name`` with the class's ``self_attrs`` (attribute -> class)."""

    def __init__(self, env: dict[str, str], self_name: str | None, self_attrs: dict[str, str]):
        self.env, self.self_name, self.self_attrs = env, self_name, self_attrs

    def of(self, e: ast.expr) -> str | None:
        if isinstance(e, ast.Name):
            return self.env.get(e.id)
        if isinstance(e, ast.Attribute):
            if isinstance(e.value, ast.Name) and e.value.id == self.self_name and self.self_name not in self.env:
                return self.self_attrs.get(e.attr)
            base = self.of(e.value)
            if base == "Config" and e.attr in SECTIONS:
                return SECTIONS[e.attr]
        return None


def _assignments(body: list[ast.stmt]):
    """(target, value) pairs of the scope's simple assignments, tuple unpacking paired element by element;
    value None where the pairing is unknown (``a, b = f()``, ``for a in ...``, augmented assignments)."""
    for n in _own_nodes(body):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                yield from _pair(t, n.value)
        elif isinstance(n, ast.AnnAssign):
            yield n.target, n.value
        elif isinstance(n, ast.AugAssign):
            yield n.target, None
        elif isinstance(n, (ast.For, ast.AsyncFor, ast.comprehension)):
            yield from _pair(n.target, None)
        elif isinstance(n, (ast.With, ast.AsyncWith)):
            for item in n.items:
                if item.optional_vars is not None:
                    yield from _pair(item.optional_vars, None)
        elif isinstance(n, ast.NamedExpr):
            yield n.target, n.value


def _pair(t: ast.expr, v: ast.expr | None):
    if isinstance(t, (ast.Tuple, ast.List)):
        if isinstance(v, (ast.Tuple, ast.List)) and len(v.elts) == len(t.elts) \
                and not any(isinstance(x, ast.Starred) for x in t.elts + v.elts):
            for a, b in zip(t.elts, v.elts):
                yield from _pair(a, b)
        else:
            for a in t.elts:
                yield from _pair(a.value if isinstance(a, ast.Starred) else a, None)
    else:
        yield t, v


def _scope_env(fn, outer: dict[str, str], self_attrs: dict[str, str],
               is_method: bool) -> tuple[dict[str, str], str | None]:
    """The names of a function's scope that hold a configuration (class name), and its ``self`` name."""
    params = _params(fn)
    body = fn.body if not isinstance(fn, ast.Lambda) else [ast.Expr(fn.body)]
    stored = _stored_names(body)
    env = {k: v for k, v in outer.items() if k not in stored and k not in {p.arg for p in params}}
    for p in params:
        cls = _ann_class(p.annotation)
        if cls and p.arg not in stored:
            env[p.arg] = cls
    plain = not any(ast.unparse(d) in ("staticmethod", "classmethod") for d in getattr(fn, "decorator_list", ()))
    self_name = params[0].arg if is_method and plain and params and params[0].arg not in stored else None
    if self_name:
        env.pop(self_name, None)
    pairs = [(t, v) for t, v in _assignments(body) if isinstance(t, ast.Name)]
    candidates = {t.id for t, _ in pairs} - {p.arg for p in params}
    declared = set()  # names bound otherwise than by assignment (def, import, except ... as, del, global ...)
    for n in _own_nodes(body):
        if isinstance(n, (ast.Global, ast.Nonlocal)):
            declared.update(n.names)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            declared.add(n.name)
        elif isinstance(n, ast.ExceptHandler) and n.name:
            declared.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            declared.update((a.asname or a.name.split(".")[0]) for a in n.names)
        elif isinstance(n, ast.Delete) or isinstance(n, (ast.MatchAs, ast.MatchStar)):
            declared.update(x.id for x in ast.walk(n) if isinstance(x, ast.Name)) if isinstance(n, ast.Delete) \
                else declared.add(n.name)
    for _ in range(3):  # chains: cfg = self.cfg; m = cfg.model
        typer = _Typer(env, self_name, self_attrs)
        for name in candidates:
            kinds = {typer.of(v) if v is not None else None for t, v in pairs if t.id == name}
            if len(kinds) == 1 and None not in kinds and name not in declared:
                env[name] = kinds.pop()
    return env, self_name


def _class_self_attrs(cls: ast.ClassDef, outer: dict[str, str], unsafe_attrs: set[str]) -> dict[str, str]:
    """Attributes of ``self`` that every method assigns only from a configuration of one class."""
    attrs: dict[str, str] = {}
    methods = [m for m in cls.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
    for _ in range(2):
        kinds: dict[str, set[str | None]] = {}
        for m in methods:
            env, self_name = _scope_env(m, outer, attrs, True)
            typer = _Typer(env, self_name, attrs)
            for node in ast.walk(m):
                for t, v in (_pair_all(node) if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) else ()):
                    if isinstance(t, ast.Attribute):
                        is_self = isinstance(t.value, ast.Name) and t.value.id == self_name
                        kinds.setdefault(t.attr, set()).add(typer.of(v) if (is_self and v is not None) else None)
        attrs = {a: next(iter(k)) for a, k in kinds.items() if len(k) == 1 and None not in k and a not in unsafe_attrs}
    return attrs


def _pair_all(node):
    if isinstance(node, ast.Assign):
        for t in node.targets:
            yield from _pair(t, node.value)
    elif isinstance(node, ast.AnnAssign):
        yield node.target, node.value
    else:
        yield node.target, None


def attributes_stored_outside_self(trees: list[ast.Module]) -> set[str]:
    """Attribute names assigned on anything but a method's own ``self`` (such an attribute is never typed)."""
    out = set()
    for tree in trees:
        methods = {id(m) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for m in c.body
                   if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))
                   and not any(ast.unparse(d) in ("staticmethod", "classmethod") for d in m.decorator_list)}
        for node in ast.walk(tree):  # anywhere, lambdas and class bodies included
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "vars"):
                out.add("*")
            elif isinstance(node, ast.Attribute) and node.attr == "__dict__":
                out.add("*")
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module, ast.ClassDef)):
                continue
            params = _params(fn) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
            self_name = params[0].arg if params and id(fn) in methods else None  # a plain function has no self
            for node in _own_nodes(fn.body):
                if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    for t, _ in _pair_all(node):
                        if isinstance(t, ast.Attribute) and not (isinstance(t.value, ast.Name)
                                                                 and t.value.id == self_name):
                            out.add(t.attr)
                elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                        and node.func.id in ("setattr", "vars"):
                    out.add("*")
                elif isinstance(node, ast.Attribute) and node.attr == "__dict__":
                    out.add("*")
    # a subclass of a bundled class could assign its base's attributes otherwise: its attributes are not typed
    classes = {c.name for tree in trees for c in ast.walk(tree) if isinstance(c, ast.ClassDef)}
    for tree in trees:
        for c in ast.walk(tree):
            if isinstance(c, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id in classes for b in c.bases):
                out |= {t.attr for n in ast.walk(c) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                        for t, _ in _pair_all(n) if isinstance(t, ast.Attribute)}
    return out


# -- substitution ---------------------------------------------------------------------------------------------
class _Substitute(ast.NodeTransformer):
    """Replace reads of folded fields by constants, scope by scope."""

    def __init__(self, exact, on_off, unsafe_attrs: set[str]):
        self.exact, self.on_off, self.unsafe = exact, on_off, unsafe_attrs
        self.typer = _Typer({}, None, {})
        self.class_attrs: list[dict[str, str]] = []
        self.folded: list[str] = []

    # scopes
    def visit_ClassDef(self, node):
        outer = self.typer
        attrs = {} if "*" in self.unsafe else _class_self_attrs(node, outer.env, self.unsafe)
        self.class_attrs.append(attrs)
        for stmt in node.body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._function(stmt, attrs, True)
            else:
                self.visit(stmt)
        self.class_attrs.pop()
        return node

    def visit_FunctionDef(self, node):
        self._function(node, {}, False)
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        outer = self.typer
        env, _ = _scope_env(node, outer.env, {}, False)
        self.typer = _Typer(env, None, {})
        node.body = self.visit(node.body)
        self.typer = outer
        return node

    def _function(self, node, attrs, is_method):
        outer = self.typer
        for d in node.decorator_list + node.args.defaults + [d for d in node.args.kw_defaults if d]:
            self.visit(d)
        env, self_name = _scope_env(node, outer.env, attrs, is_method)
        self.typer = _Typer(env, self_name, attrs)
        node.body = [self.visit(s) for s in node.body]
        self.typer = outer

    # tests: on/off numbers fold where only their truth is asked
    def _truth(self, e: ast.expr) -> ast.expr:
        if isinstance(e, ast.Attribute):
            cls = self.typer.of(e.value)
            if (cls, e.attr) in self.on_off:
                self.folded.append(f"{cls}.{e.attr}")
                return ast.copy_location(ast.Constant(self.on_off[(cls, e.attr)]), e)
        if isinstance(e, ast.BoolOp):
            e.values = [self._truth(v) for v in e.values]
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            e.operand = self._truth(e.operand)
        return e

    def visit_If(self, node):
        node.test = self._truth(node.test)
        self.generic_visit(node)
        return node

    visit_While = visit_If

    def visit_IfExp(self, node):
        node.test = self._truth(node.test)
        self.generic_visit(node)
        return node

    def visit_UnaryOp(self, node):
        if isinstance(node.op, ast.Not):
            node.operand = self._truth(node.operand)
        self.generic_visit(node)
        return node

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id == "bool" and len(node.args) == 1 and not node.keywords:
            node.args[0] = self._truth(node.args[0])
        self.generic_visit(node)
        return node

    def visit_Compare(self, node):
        # on/off number compared with 0: x == 0, x != 0, x > 0
        if (len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq, ast.Gt))
                and isinstance(node.comparators[0], ast.Constant) and node.comparators[0].value == 0
                and not isinstance(node.comparators[0].value, bool) and isinstance(node.left, ast.Attribute)):
            cls = self.typer.of(node.left.value)
            if (cls, node.left.attr) in self.on_off:
                on = self.on_off[(cls, node.left.attr)]
                self.folded.append(f"{cls}.{node.left.attr}")
                return ast.copy_location(ast.Constant(not on if isinstance(node.ops[0], ast.Eq) else on), node)
        self.generic_visit(node)
        return node

    def visit_Attribute(self, node):
        if isinstance(node.ctx, ast.Load):
            cls = self.typer.of(node.value)
            if (cls, node.attr) in self.exact:
                self.folded.append(f"{cls}.{node.attr}")
                return ast.copy_location(ast.Constant(self.exact[(cls, node.attr)]), node)
        self.generic_visit(node)
        return node


# -- constant folding -----------------------------------------------------------------------------------------
_CMP = {ast.Eq: lambda a, b: a == b, ast.NotEq: lambda a, b: a != b, ast.Lt: lambda a, b: a < b,
        ast.LtE: lambda a, b: a <= b, ast.Gt: lambda a, b: a > b, ast.GtE: lambda a, b: a >= b,
        ast.Is: lambda a, b: a is b, ast.IsNot: lambda a, b: a is not b,
        ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b}
_SCALARS = (bool, int, float, str, type(None))


def _const(e: ast.expr) -> tuple[bool, Any]:
    """(is a constant, its value): scalars, and tuples/lists/sets of scalars (for ``in``)."""
    if isinstance(e, ast.Constant) and isinstance(e.value, _SCALARS):
        return True, e.value
    if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
        vals = [_const(x) for x in e.elts]
        if all(ok for ok, _ in vals):
            return True, tuple(v for _, v in vals)
    return False, None


def _pure(e: ast.expr) -> bool:
    """Reading ``e`` has no side effect we care about (names, attributes, constants, comparisons of those)."""
    return all(isinstance(n, (ast.Name, ast.Attribute, ast.Constant, ast.Compare, ast.BoolOp, ast.UnaryOp,
                              ast.Load, ast.cmpop, ast.boolop, ast.unaryop, ast.Tuple)) for n in ast.walk(e))


class _Fold(ast.NodeTransformer):
    def __init__(self, registries: dict[str, ast.Dict]):
        self.registries = registries

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        ok, v = _const(node.operand)
        if ok and isinstance(node.op, ast.Not):
            return ast.copy_location(ast.Constant(not v), node)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        vals = [_const(x) for x in [node.left, *node.comparators]]
        if not all(ok for ok, _ in vals):
            return node
        try:
            out = all(_CMP[type(op)](vals[i][1], vals[i + 1][1]) for i, op in enumerate(node.ops))
        except TypeError:
            return node
        return ast.copy_location(ast.Constant(out), node)

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        is_and = isinstance(node.op, ast.And)
        out: list[ast.expr] = []
        for i, v in enumerate(node.values):
            ok, c = _const(v)
            last = i == len(node.values) - 1
            if ok and not isinstance(v, ast.Constant):
                ok = False  # a tuple literal: leave it
            if ok and bool(c) == is_and and not last:
                continue  # a neutral operand (truthy in `and`, falsy in `or`) goes
            out.append(v)
            if ok:  # the deciding constant: nothing after it runs
                break
        if len(out) == 1:
            return out[0]
        node.values = out
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if isinstance(node.func, ast.Name) and node.func.id == "bool" and len(node.args) == 1 and not node.keywords \
                and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, _SCALARS):
            return ast.copy_location(ast.Constant(bool(node.args[0].value)), node)
        return node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        ok, c = _const(node.test)
        if ok and isinstance(node.test, ast.Constant):
            return node.body if c else node.orelse
        return node

    def visit_Subscript(self, node):
        self.generic_visit(node)
        if isinstance(node.ctx, ast.Load) and isinstance(node.value, ast.Name) and node.value.id in self.registries:
            ok, key = _const(node.slice)
            if ok and isinstance(node.slice, ast.Constant):
                d = self.registries[node.value.id]
                for k, v in zip(d.keys, d.values):
                    if isinstance(k, ast.Constant) and k.value == key and isinstance(v, (ast.Name, ast.Constant)):
                        return ast.copy_location(copy.deepcopy(v), node)
        return node

    # statements
    def _block(self, body: list[ast.stmt], test_ctx=True) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for s in body:
            r = self.visit(s)
            items = r if isinstance(r, list) else [r] if r is not None else []
            for item in items:
                out.append(item)
            if out and isinstance(out[-1], (ast.Return, ast.Raise, ast.Continue, ast.Break)):
                break  # what follows never runs
        return out

    def generic_visit(self, node):
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
                new = self._block(value)
                if not new and name in ("body",):
                    new = [ast.Pass()]
                setattr(node, name, new)
            elif isinstance(value, list):
                setattr(node, name, [self.visit(x) if isinstance(x, ast.AST) else x for x in value])
            elif isinstance(value, ast.AST):
                setattr(node, name, self.visit(value))
        return node

    def _test(self, test: ast.expr) -> ast.expr:
        """In a test only truth matters: ``x and False`` is False, ``x or True`` is True (pure ``x``)."""
        if isinstance(test, ast.BoolOp) and _pure(test):
            ok, c = _const(test.values[-1])
            if ok and isinstance(test.values[-1], ast.Constant):
                if bool(c) != isinstance(test.op, ast.And):  # `... or True` / `... and False`
                    return ast.copy_location(ast.Constant(bool(c)), test)
                if len(test.values) == 2:  # `x and True` / `x or False`: x's truth
                    return test.values[0]
        return test

    def visit_If(self, node):
        node.test = self._test(self.visit(node.test))
        ok, c = _const(node.test)
        if ok and isinstance(node.test, ast.Constant):
            return self._block(node.body if c else node.orelse)
        node.body = self._block(node.body) or [ast.Pass()]
        node.orelse = self._block(node.orelse)
        return node

    def visit_While(self, node):
        node.test = self._test(self.visit(node.test))
        if isinstance(node.test, ast.Constant) and not node.test.value:
            return self._block(node.orelse)
        node.body = self._block(node.body) or [ast.Pass()]
        node.orelse = self._block(node.orelse)
        return node


def _propagate_locals(tree: ast.Module) -> None:
    """A function's local assigned once at its top level from a scalar constant, never stored again (nor
    declared global/nonlocal anywhere in the function), is replaced by the constant after its assignment."""
    for fn in ast.walk(tree):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        stores: dict[str, int] = {}
        for n in ast.walk(fn):  # nested scopes too: a nonlocal store there counts
            if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
                stores[n.id] = stores.get(n.id, 0) + 1
            elif isinstance(n, (ast.Global, ast.Nonlocal)):
                for x in n.names:
                    stores[x] = stores.get(x, 0) + 2
            elif isinstance(n, ast.arg):
                stores[n.arg] = stores.get(n.arg, 0) + 2
            elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n is not fn:
                stores[n.name] = stores.get(n.name, 0) + 2
            elif isinstance(n, ast.ExceptHandler) and n.name:
                stores[n.name] = stores.get(n.name, 0) + 2
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                for a in n.names:
                    k = a.asname or a.name.split(".")[0]
                    stores[k] = stores.get(k, 0) + 2
        for i, s in enumerate(list(fn.body)):
            if not (isinstance(s, ast.Assign) and len(s.targets) == 1 and isinstance(s.targets[0], ast.Name)
                    and isinstance(s.value, ast.Constant) and isinstance(s.value.value, _SCALARS)):
                continue
            name = s.targets[0].id
            if stores.get(name) != 1:
                continue
            value = s.value.value
            later = fn.body[i + 1:]
            for stmt in later:
                for n in ast.walk(stmt):
                    for f, v in ast.iter_fields(n):
                        if isinstance(v, ast.Name) and v.id == name and isinstance(v.ctx, ast.Load):
                            setattr(n, f, ast.copy_location(ast.Constant(value), v))
                        elif isinstance(v, list):
                            for j, x in enumerate(v):
                                if isinstance(x, ast.Name) and x.id == name and isinstance(x.ctx, ast.Load):
                                    v[j] = ast.copy_location(ast.Constant(value), x)
            if not any(isinstance(n, ast.Name) and n.id == name and isinstance(n.ctx, ast.Load) for n in ast.walk(fn)):
                fn.body[i] = ast.Pass()  # read nowhere now (a function defined before it may still read it)
        fn.body = [s for s in fn.body if not isinstance(s, ast.Pass)] or [ast.Pass()]


def registries(trees: dict[str, ast.Module]) -> dict[str, dict[str, ast.Dict]]:
    """Per module: its top-level dicts with constant keys that no module mutates (item stores, method calls
    other than ``get``/``items``/``keys``/``values``): those a constant subscript may read through."""
    out: dict[str, dict[str, ast.Dict]] = {}
    for m, tree in trees.items():
        for s in tree.body:
            target = s.targets[0] if isinstance(s, ast.Assign) and len(s.targets) == 1 else \
                s.target if isinstance(s, ast.AnnAssign) else None
            if isinstance(target, ast.Name) and isinstance(getattr(s, "value", None), ast.Dict) \
                    and all(isinstance(k, ast.Constant) for k in s.value.keys):
                out.setdefault(m, {})[target.id] = s.value
    mutated = set()
    for tree in trees.values():
        for n in ast.walk(tree):
            if isinstance(n, ast.Subscript) and isinstance(n.ctx, (ast.Store, ast.Del)) \
                    and isinstance(n.value, ast.Name):
                mutated.add(n.value.id)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) \
                    and n.attr not in ("get", "items", "keys", "values"):
                mutated.add(n.value.id)
    return {m: {k: v for k, v in regs.items() if k not in mutated} for m, regs in out.items()}


CONSTRUCTORS = {*CONFIG_CLASSES, "replace"}


def check_no_other_configs(trees: dict[str, ast.Module]) -> None:
    """Folding assumes every configuration object the folded code reads is the run's: no folded module may
    build one (``ModelConfig(...)``, ``dataclasses.replace(cfg.model, ...)``) except where the result goes to
    a name of no config annotation (``cfg = cfg or QATConfig()`` of a ``QATConfig | None`` parameter)."""
    for m, tree in trees.items():
        if m in NOT_FOLDED:
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Call):
                f = n.func
                name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
                if name in CONFIG_CLASSES | {"from_dict", "from_json", "from_env", "apply_overrides"}:
                    if _allowed_construction(tree, n):
                        continue
                    raise RuntimeError(f"{m}:{n.lineno}: builds a configuration ({ast.unparse(n)[:60]}); "
                                       f"folding assumes only the run's exists (pgolf/submit/fold.py)")
                if name == "replace" and isinstance(f, ast.Attribute) and ast.unparse(f.value) == "dataclasses" \
                        and n.args and _mentions_cfg(n.args[0]):
                    raise RuntimeError(f"{m}:{n.lineno}: dataclasses.replace of a configuration")


def _mentions_cfg(e: ast.expr) -> bool:
    return any(isinstance(x, ast.Name) and x.id in ("cfg", "config") for x in ast.walk(e))


ALLOWED_CONSTRUCTIONS = (
    "cfg or QATConfig()",  # qat.assign_qat_specs: a parameter annotated QATConfig | None, never folded
    "Config.from_dict(info.get('config') or {})",  # train: a checkpoint's config, only compared as a dict
)


def _allowed_construction(tree: ast.Module, call: ast.Call) -> bool:
    for n in ast.walk(tree):
        if isinstance(n, (ast.BoolOp, ast.Call)) and call in list(ast.walk(n)) \
                and ast.unparse(n) in ALLOWED_CONSTRUCTIONS:
            return True
    return False


def fold_module(tree: ast.Module, folding: Folding, regs: dict[str, ast.Dict], unsafe_attrs: set[str]) -> list[str]:
    """Fold ``folding`` into one module's tree in place; returns the reads it replaced (class.field)."""
    exact, on_off = folding.constants()
    sub = _Substitute(exact, on_off, unsafe_attrs)
    for i, s in enumerate(tree.body):
        tree.body[i] = sub.visit(s)
    before = None
    while True:
        _Fold(regs).visit(tree)
        _propagate_locals(tree)
        _Fold(regs).visit(tree)
        now = ast.dump(tree)
        if now == before:
            break
        before = now
    return sub.folded
