"""The site policy: which submitted code this datasite may approve and run.

By default a medsyft datasite approves and runs only medsyft's own code: a job call, a
model release or a cross-site evaluation, exactly as :mod:`domains.runtime.templates` writes them. They are
recognised by what would run, never by their name:

- the function's source, normalised with :mod:`ast` (formatting and comments do not
  count; the docstring and every statement do), equals the template for its job id;
- the code PySyft will actually execute (``parsed_code``, which the server derives from
  the source) equals what PySyft derives from the template;
- the inputs are bound as the template binds them: ``labels`` to an asset, ``job`` (or
  ``release``, or ``evaluation``) to a constant holding a job description, ``payload`` scientist-owned
  ``dict``; the input policy is PySyft's ``MixedInputPolicy`` and the output policy its
  ``OutputPolicyExecuteCount`` with the job's call count (a custom policy class is code);
- the constant's job id (an evaluation's own id) is the one in the function's name.

Anything else is *custom code*. It is approved only with ``--allow-custom-code`` on a
datasite whose ``DIR/policy.json`` allows custom code, and the approval is recorded by the
hash of what will run, so the datasite (:mod:`domains.site.syft_policy`) refuses to execute
custom code that no owner approved that way, whoever pressed PySyft's own approve button.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from domains.errors import DataDirError
from domains.runtime.templates import (
    EVALUATE_PREFIX,
    JOB_PREFIX,
    RELEASE_PREFIX,
    evaluate_source,
    job_source,
    release_source,
)
from domains.site.datadir import DataDir
from domains.site.sandbox import SandboxLimits
from privacy.durable import atomic_write, utc_stamp

POLICY_FILE = "policy.json"
_JOB_ID = re.compile(r"^[0-9a-f]{6,64}$")
_ARGS = ("labels", "payload")


@dataclass
class CodeVerdict:
    """What a request's code is, as far as the site policy is concerned."""

    kind: str  # "job" | "release" | "evaluate" | "custom"
    code_hash: str
    reasons: list[str] = field(default_factory=list)  # why it is custom (empty otherwise)
    constant: dict[str, Any] | None = None  # the job (or release) constant of medsyft code

    @property
    def is_medsyft(self) -> bool:
        return self.kind in _KINDS


def code_hash(code: Any) -> str:
    """SHA-256 of what would run: the executed code and its input and output bindings."""
    parts = [str(getattr(code, "parsed_code", "")), _bindings_text(code),
             repr(getattr(code, "output_policy_type", None)),
             json.dumps(getattr(code, "output_policy_init_kwargs", None) or {}, sort_keys=True, default=str)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def classify(code: Any) -> CodeVerdict:
    """Recognise medsyft's own job, release or evaluation code; everything else is custom."""
    digest = code_hash(code)
    name = str(getattr(code, "service_func_name", ""))
    kind, code_id = _kind_of(name)
    if kind is None:
        return CodeVerdict("custom", digest,
                           [f"`{name}` is not named as a medsyft job, release or evaluation"])
    constant_name = _KINDS[kind][1]
    constant, reasons = _binding_problems(code, constant_name)
    if not reasons and _id_in(kind, constant or {}) != code_id:
        what = "evaluation" if kind == "evaluate" else "job"
        reasons.append(f"the {constant_name} constant is not for {what} {code_id}")
    limit = _limit_of(constant or {}) if kind == "job" else 1
    if not reasons and limit is None:
        reasons.append("the job constant has no valid round count")
    if not reasons:
        reasons += _source_problems(code, _source_for(kind, code_id, int(limit or 0)), name)
        reasons += _output_problems(code, int(limit or 0))
    if reasons:
        return CodeVerdict("custom", digest, reasons)
    return CodeVerdict(kind, digest, [], constant)


# kind -> (function name prefix, the constant's argument name)
_KINDS = {"job": (JOB_PREFIX, "job"), "release": (RELEASE_PREFIX, "release"),
          "evaluate": (EVALUATE_PREFIX, "evaluation")}


def _kind_of(name: str) -> tuple[str | None, str]:
    for kind, (prefix, _) in _KINDS.items():
        if name.startswith(prefix) and _JOB_ID.match(name[len(prefix):]):
            return kind, name[len(prefix):]
    return None, ""


def _id_in(kind: str, constant: dict[str, Any]) -> Any:
    """The id the constant is for: a job's (of the released job) or an evaluation's own."""
    if kind == "evaluate":
        return constant.get("eval_id")
    spec = constant if kind == "job" else constant.get("job")
    return spec.get("job_id") if isinstance(spec, dict) else None


def _source_for(kind: str, code_id: str, limit: int) -> str:
    if kind == "job":
        return job_source(job_id=code_id, limit=limit)
    return release_source(job_id=code_id) if kind == "release" else evaluate_source(eval_id=code_id)


def _limit_of(spec: dict[str, Any]) -> int | None:
    rounds = spec.get("rounds")
    return rounds + 1 if isinstance(rounds, int) and not isinstance(rounds, bool) and rounds >= 1 else None


def _rules(code: Any) -> dict[str, Any] | None:
    """The input rules of the code's single server, or None when it binds several servers."""
    init = getattr(code, "input_policy_init_kwargs", None) or {}
    return dict(next(iter(init.values()))) if len(init) == 1 else None


def _bindings_text(code: Any) -> str:
    rules = _rules(code) or {}
    return ";".join(f"{kw}={type(r).__name__}:{getattr(r, 'val', getattr(r, 'type', None))!r}"
                    for kw, r in sorted(rules.items()))


def _binding_problems(code: Any, constant_name: str) -> tuple[dict[str, Any] | None, list[str]]:
    policy = getattr(code, "input_policy_type", None)
    if getattr(policy, "__name__", None) != "MixedInputPolicy" or not isinstance(policy, type):
        return None, ["its input policy is not PySyft's MixedInputPolicy"]
    rules = _rules(code)
    expected = {*_ARGS, constant_name}
    if rules is None or set(rules) != expected:
        got = sorted(rules) if rules is not None else "inputs on several servers"
        return None, [f"its inputs are {got}, not {sorted(expected)}"]
    problems = []
    if type(rules["labels"]).__name__ != "Matches":
        problems.append("`labels` is not bound to an asset")
    payload = rules["payload"]
    if type(payload).__name__ != "UserOwned" or getattr(payload, "type", None) is not dict:
        problems.append("`payload` is not a scientist-owned dict")
    constant = rules[constant_name]
    value = getattr(constant, "val", None)
    if type(constant).__name__ != "Constant" or not isinstance(value, dict):
        problems.append(f"`{constant_name}` is not a constant holding a dict")
        value = None
    return value, problems


def _output_problems(code: Any, limit: int) -> list[str]:
    policy = getattr(code, "output_policy_type", None)
    if getattr(policy, "__name__", None) != "OutputPolicyExecuteCount" or not isinstance(policy, type):
        return ["its output policy is not PySyft's OutputPolicyExecuteCount"]
    kwargs = getattr(code, "output_policy_init_kwargs", None) or {}
    if kwargs.get("limit") != limit:
        return [f"its output policy allows {kwargs.get('limit')!r} calls, not the job's {limit}"]
    return []


def _function(source: str, name: str) -> ast.FunctionDef | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    return found[0] if len(tree.body) == 1 and found else None


def _normalised(fn: ast.FunctionDef) -> str:
    bare = ast.FunctionDef(name=fn.name, args=fn.args, body=fn.body, decorator_list=[],
                           returns=fn.returns, type_comment=None)
    return ast.dump(bare, include_attributes=False)


def _source_problems(code: Any, template: str, name: str) -> list[str]:
    """Compare the submitted and the executed code with the template's."""
    expected = _function(_template_function(template), name)
    submitted = _function(str(getattr(code, "raw_code", "")), name)
    if expected is None or submitted is None or _normalised(expected) != _normalised(submitted):
        return ["its source differs from medsyft's template"]
    parsed = str(getattr(code, "parsed_code", ""))
    try:
        from syft.service.code.user_code import parse_user_code

        derived = parse_user_code(raw_code=_template_function(template),
                                  func_name=str(getattr(code, "unique_func_name", "")),
                                  original_func_name=name, function_input_kwargs=list(_signature(name)))
        if ast.dump(ast.parse(parsed)) != ast.dump(ast.parse(derived)):
            return ["the code PySyft would execute differs from medsyft's template"]
    except SyntaxError:
        return ["the code PySyft would execute does not parse"]
    if getattr(code, "nested_codes", None):
        return ["it calls other submitted functions"]
    return []


def _signature(name: str) -> tuple[str, ...]:
    kind, _ = _kind_of(name)
    return ("labels", _KINDS[kind or "job"][1], "payload")


def _template_function(template: str) -> str:
    """The decorated function alone, as ``inspect.getsource`` hands it to PySyft."""
    return template[template.index("@sy.syft_function"):]


# -- the datasite's policy file ---------------------------------------------------------
@dataclass
class SitePolicy:
    """``DIR/policy.json``: whether custom code may be approved, which was, and the limits of
    the sandbox it runs in (:mod:`domains.site.sandbox`; files written before the sandbox get the
    defaults)."""

    allow_custom_code: bool = False
    custom_approved: dict[str, dict[str, Any]] = field(default_factory=dict)
    sandbox: SandboxLimits = field(default_factory=SandboxLimits)


def load_policy(data_dir: DataDir) -> SitePolicy:
    path = data_dir.file(POLICY_FILE)
    if not path.exists():
        return SitePolicy()
    try:
        raw = json.loads(path.read_text())
        return SitePolicy(allow_custom_code=bool(raw["allow_custom_code"]),
                          custom_approved=dict(raw.get("custom_approved", {})),
                          sandbox=_limits(raw.get("sandbox", {})))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataDirError(f"{path} is unreadable or damaged ({exc}); restore it from a backup "
                           "(it says whether this datasite runs custom code)") from exc


def _limits(raw: dict[str, Any]) -> SandboxLimits:
    """The stored sandbox limits over the defaults; each must be a whole number >= 1."""
    if not isinstance(raw, dict):
        raise ValueError("sandbox is not a mapping of limits")
    for name, value in raw.items():
        if name not in SandboxLimits.__dataclass_fields__:
            raise ValueError(f"unknown sandbox limit {name!r}")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"sandbox limit {name} must be a whole number >= 1, not {value!r}")
    return replace(SandboxLimits(), **raw)


def save_policy(data_dir: DataDir, policy: SitePolicy) -> None:
    atomic_write(data_dir.file(POLICY_FILE), json.dumps(
        {"allow_custom_code": policy.allow_custom_code, "custom_approved": policy.custom_approved,
         "sandbox": asdict(policy.sandbox)}, indent=2), mode=0o600)


def record_custom_approval(data_dir: DataDir, verdict: CodeVerdict, *, request_id: str) -> None:
    """Remember that the owner approved this exact custom code (the datasite checks it at run time)."""
    policy = load_policy(data_dir)
    policy.custom_approved[verdict.code_hash] = {
        "request": request_id, "time": utc_stamp()}
    save_policy(data_dir, policy)


def may_run(data_dir: DataDir, verdict: CodeVerdict) -> str | None:
    """None when *verdict*'s code may run here, else the reason it may not (for the caller)."""
    if verdict.is_medsyft:
        return None
    policy = load_policy(data_dir)
    if not policy.allow_custom_code:
        return ("this datasite runs only medsyft's own job and release code; this is custom code "
                f"({verdict.reasons[0] if verdict.reasons else 'not a medsyft template'})")
    if verdict.code_hash not in policy.custom_approved:
        return ("this custom code was not approved with `medsyft domain approve ID --allow-custom-code` "
                "on this datasite")
    return None
