"""The whole-bundle passes of the folding (steps 5-7 of :mod:`pgolf.submit.fold`), run to a fixed point after each
module was folded: constant arguments, instance constants, methods nothing can call."""

from __future__ import annotations

import ast
from typing import Any

from pgolf.submit.fold import (_SCALARS, _Fold, _own_nodes, _pair_all, _params, _propagate_locals, _stored_names,
                               attributes_stored_outside_self)


# -- constant arguments ---------------------------------------------------------------------------------------
def _shadowed(module: ast.Module, names: set[str]) -> dict[str, set[int]]:
    """name -> ids of the nodes inside the functions (lambdas, comprehensions) where ``name`` is local (a
    parameter or assigned there, not declared global): there it never means the top-level definition."""
    out: dict[str, set[int]] = {}
    for scope in ast.walk(module):
        if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local = {a.arg for a in _params(scope)}
            body = scope.body if isinstance(scope.body, list) else [ast.Expr(scope.body)]
            local |= _stored_names(body)
            local -= {x for n in _own_nodes(body) if isinstance(n, ast.Global) for x in n.names}
        elif isinstance(scope, ast.ClassDef):  # a class body's own names (dataclass fields), not its methods'
            stmts = [x for x in scope.body if not isinstance(x, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
            for name in _stored_names(stmts) & names:
                out.setdefault(name, set()).update(id(n) for x in stmts for n in ast.walk(x))
            continue
        elif isinstance(scope, (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            local = {x.id for g in scope.generators for x in ast.walk(g.target) if isinstance(x, ast.Name)}
        else:
            continue
        for name in local & names:
            out.setdefault(name, set()).update(id(n) for n in ast.walk(scope) if n is not scope)
    return out


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def propagate_arguments(body: list[ast.stmt]) -> list[str]:
    """A top-level function that is only ever called (never passed on as a value, never rebound), whose
    every call gives a parameter the same scalar constant (explicitly or by its default), reads that
    constant for it (``compress(raw, "zlib")`` -> ``method == "zlib"`` folds). Returns "function.parameter"
    for each parameter it substituted."""
    module = ast.Module(body, [])
    funcs = {s.name: s for s in body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
    skip = {name: 0 for name in funcs}  # leading parameters the call does not give (a class's __init__: self)
    for s in body:
        init = next((m for m in s.body if isinstance(m, ast.FunctionDef) and m.name == "__init__"), None) \
            if isinstance(s, ast.ClassDef) else None
        if init is not None and not init.decorator_list:
            funcs[s.name], skip[s.name] = init, 1
    calls: dict[str, list[ast.Call]] = {n: [] for n in funcs}
    bad: set[str] = set()
    call_funcs = set()
    shadowed = _shadowed(module, set(funcs))
    for n in ast.walk(module):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in funcs \
                and id(n.func) not in shadowed.get(n.func.id, ()):
            calls[n.func.id].append(n)
            call_funcs.add(id(n.func))
    for n in ast.walk(module):
        if isinstance(n, ast.Name) and n.id in funcs and id(n) in shadowed.get(n.id, ()):
            continue  # a local of that name
        if isinstance(n, ast.Name) and n.id in funcs and (id(n) not in call_funcs or not isinstance(n.ctx, ast.Load)):
            bad.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name in funcs \
                and funcs.get(n.name) is not n and not (skip[n.name] and isinstance(n, ast.ClassDef)):
            bad.add(n.name)
    done = []
    for name, fn in funcs.items():
        if name in bad or not calls[name]:
            continue
        a = fn.args
        if any(isinstance(x, ast.Starred) for c in calls[name] for x in c.args) or \
                any(k.arg is None for c in calls[name] for k in c.keywords):
            continue
        positional = [*a.posonlyargs, *a.args][skip[name]:]
        defaults = dict(zip([p.arg for p in positional][len(positional) - len(a.defaults):], a.defaults))
        defaults.update({p.arg: d for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None})
        rebound = _rebound(fn) | {x for inner in ast.walk(fn) if isinstance(inner, (ast.Global, ast.Nonlocal))
                                  for x in inner.names}
        for i, p in enumerate([*positional, *a.kwonlyargs]):
            if p.arg in rebound:
                continue
            values = []
            for c in calls[name]:
                kw = {k.arg: k.value for k in c.keywords}
                if i < len(positional) and i < len(c.args):
                    values.append(c.args[i])
                elif p.arg in kw:
                    values.append(kw[p.arg])
                elif p.arg in defaults:
                    values.append(defaults[p.arg])
                else:
                    values.append(None)
            consts = [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, _SCALARS)]
            if len(consts) != len(values) or not all(_same(consts[0], x) for x in consts):
                continue
            hit = False
            for stmt in fn.body:
                for n in ast.walk(stmt):
                    for f, v in ast.iter_fields(n):
                        if isinstance(v, ast.Name) and v.id == p.arg and isinstance(v.ctx, ast.Load):
                            setattr(n, f, ast.copy_location(ast.Constant(consts[0]), v))
                            hit = True
                        elif isinstance(v, list):
                            for j, x in enumerate(v):
                                if isinstance(x, ast.Name) and x.id == p.arg and isinstance(x.ctx, ast.Load):
                                    v[j] = ast.copy_location(ast.Constant(consts[0]), x)
                                    hit = True
            if hit:
                done.append(f"{name}.{p.arg}")
    return done


LIBRARY_SET_ATTRS = {"training"}  # attributes torch itself sets on our nn.Modules (train()/eval())


def propagate_instance_constants(body: list[ast.stmt]) -> list[str]:
    """An attribute that a class's methods only ever assign one scalar constant (``self.lm_head = None``),
    that nothing else assigns (no other object's attribute of that name is stored, no subclass, no class-level
    binding of the name), reads as that constant in the class's methods: any read after the first assignment
    gives it (a read before it would fail). The assignments stay. Returns "Class.attribute" for each."""
    module = ast.Module(body, [])
    unsafe = attributes_stored_outside_self([module]) | LIBRARY_SET_ATTRS
    if "*" in unsafe:
        return []
    based = {b.id for c in body if isinstance(c, ast.ClassDef) for b in c.bases if isinstance(b, ast.Name)}
    done = []
    for c in body:
        if not isinstance(c, ast.ClassDef) or c.name in based or any(isinstance(b, ast.Name) and
                                                                      any(isinstance(x, ast.ClassDef) and x.name == b.id
                                                                          for x in body) for b in c.bases):
            continue
        class_level = set().union(*(top_names(s) for s in c.body))
        methods = [m for m in c.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef))]
        values: dict[str, list] = {}
        selfs = {}
        for m in methods:
            params = _params(m)
            plain = not any(ast.unparse(d) in ("staticmethod", "classmethod") for d in m.decorator_list)
            if not params or not plain or params[0].arg in _rebound(m):
                selfs[id(m)] = None
                continue
            me = selfs[id(m)] = params[0].arg
            for n in ast.walk(m):
                if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                    for t, v in _pair_all(n):
                        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == me:
                            values.setdefault(t.attr, []).append(v)
                elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Del):
                    values.setdefault(n.attr, []).append(None)
        if any(v is None for v in selfs.values()):
            continue  # a static/class method or a rebound self: do not reason about this class
        for attr, vs in values.items():
            if attr in unsafe or attr in class_level:
                continue
            if not all(isinstance(v, ast.Constant) and isinstance(v.value, _SCALARS) for v in vs):
                continue
            if not all(_same(vs[0].value, v.value) for v in vs):
                continue
            hit = False
            for m in methods:
                me = selfs[id(m)]
                for n in ast.walk(m):
                    for f, v in ast.iter_fields(n):
                        items = v if isinstance(v, list) else [v]
                        for j, x in enumerate(items):
                            if isinstance(x, ast.Attribute) and isinstance(x.ctx, ast.Load) and x.attr == attr \
                                    and isinstance(x.value, ast.Name) and x.value.id == me:
                                new = ast.copy_location(ast.Constant(vs[0].value), x)
                                if isinstance(v, list):
                                    v[j] = new
                                else:
                                    setattr(n, f, new)
                                hit = True
            if hit:
                done.append(f"{c.name}.{attr}")
    return done


def _rebound(fn) -> set[str]:
    out = {x.id for x in ast.walk(fn) if isinstance(x, ast.Name) and isinstance(x.ctx, (ast.Store, ast.Del))}
    out |= {x.arg for inner in ast.walk(fn) if inner is not fn
            and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) for x in _params(inner)}
    return out


def top_names(stmt: ast.stmt) -> set[str]:
    """Names a module- or class-level statement binds (definitions, assignments, imports)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name.split(".")[0]) for a in stmt.names}
    return set()


def drop_unused_methods(body: list[ast.stmt]) -> list[str]:
    """Methods nothing can call: of a class with no base outside the bundle (no library calls it by name,
    as torch calls ``forward``), not a dunder, whose name appears nowhere else in the bundle (no attribute
    of that name is read, no string of it: ``getattr(x, "name")``). To a fixed point; returns "Class.method"."""
    done: list[str] = []
    defs = {c.name: c for c in body if isinstance(c, ast.ClassDef)}
    plain: set[str] = set()  # classes whose every ancestor is a bundled class (none is a library's)
    for _ in range(len(defs) + 1):
        plain |= {n for n, c in defs.items() if not c.keywords
                  and all(isinstance(b, ast.Name) and b.id in plain for b in c.bases)}
    while True:
        counts: dict[str, int] = {}
        for n in ast.walk(ast.Module(body, [])):
            key = n.attr if isinstance(n, ast.Attribute) else n.id if isinstance(n, ast.Name) else \
                n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) else None
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        dropped = False
        for c in body:
            if not isinstance(c, ast.ClassDef) or c.name not in plain:
                continue
            keep = []
            for m in c.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith("__") \
                        and counts.get(m.name, 0) == 0:
                    done.append(f"{c.name}.{m.name}")
                    dropped = True
                    continue
                keep.append(m)
            c.body = keep or [ast.Pass()]
        if not dropped:
            return done


def fold_bundle(body: list[ast.stmt]) -> tuple[list[ast.stmt], list[str]]:
    """The whole bundle's constant arguments (:func:`propagate_arguments`) and what they make constant, to a
    fixed point."""
    module = ast.Module(body, [])
    done: list[str] = []
    for _ in range(10):
        new = propagate_arguments(module.body)
        new += propagate_instance_constants(module.body)
        if not new:
            break
        _Fold({}).visit(module)
        _propagate_locals(module)
        _Fold({}).visit(module)
        done += new
    done += drop_unused_methods(module.body)
    return module.body, done
