"""The site policy, enforced where code runs: inside the datasite's PySyft process.

``medsyft domain approve`` refuses custom code (:mod:`domains.review.code_policy`), but an owner
could still press PySyft's own approve button, or a future PySyft could approve by other
means. So the datasite checks again at every call: PySyft's ``UserCodeService._call`` (the
one path by which approved code executes) first classifies the code, and refuses to run
anything that is neither medsyft's own job or release code nor custom code an owner
approved with ``--allow-custom-code`` on a datasite whose policy allows it. The datasite's
admin (the data owner) is not checked: the owner may run what they like on their own data.

A code object never changes once submitted, so its classification is kept per code id; the
policy file, which an owner may change at any time, is read at every call of custom code.

Custom code that may run still never runs in this process: PySyft's ``execute_byte_code``
(which ``exec``s the code here, with every privilege of the datasite) is replaced, for custom
code only, by a call in a bubblewrap sandbox (:mod:`domains.site.sandbox`) that returns what
PySyft's would: a ``UserCodeExecutionOutput`` with the result or a safe error message.
medsyft's own job and release code keeps running here: it needs the HE key and the ledgers.
Custom code with its own policy class is refused at execution: PySyft runs policy classes in
this process, and no sandbox reaches them.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from domains.errors import MedsyftDomainError, SandboxError
from domains.review.code_policy import CodeVerdict, classify, load_policy, may_run
from domains.site import sandbox
from domains.site.datadir import DataDir

log = logging.getLogger(__name__)
_VERDICTS: dict[str, CodeVerdict] = {}
_POLICY_CODE: dict[str, bool] = {}  # per code id: does it bring its own policy class (code)?


def apply(data_dir: DataDir) -> list[str]:
    """Install the check and the sandbox into this process's PySyft; returns what was applied
    and whether the sandbox works here (for the startup log)."""
    from syft.service.action import action_service
    from syft.service.code.user_code_service import UserCodeService

    if not getattr(UserCodeService._call, "_medsyft_policy", False):
        UserCodeService._call = _guarded_call(UserCodeService._call, data_dir)
    if not getattr(action_service.execute_byte_code, "_medsyft_sandbox", False):
        action_service.execute_byte_code = _sandboxed(action_service.execute_byte_code, data_dir)
    return ["site policy at execution", sandbox_status(data_dir)]


def sandbox_status(data_dir: DataDir) -> str:
    """One phrase for the startup log: does a sandbox start here, and with what."""
    sandbox.clear_stale(data_dir)
    try:
        limits = load_policy(data_dir).sandbox
    except MedsyftDomainError as exc:
        return f"custom-code sandbox UNCHECKED ({exc})"
    problem = sandbox.probe(data_dir, replace(limits, wall_seconds=min(limits.wall_seconds, 60)))
    if problem is not None:
        problem = " ".join(problem.split())[:500]  # one line of the log
        return f"custom-code sandbox UNAVAILABLE, custom code will be refused at execution: {problem}"
    return (f"custom code runs in a bubblewrap sandbox ({sandbox.version()}; {limits.memory_mb} MiB, "
            f"{limits.cpu_seconds} s CPU, {limits.wall_seconds} s wall clock, {limits.disk_mb} MiB disk)")


def _guarded_call(original: Any, data_dir: DataDir) -> Any:
    from syft.service.user.user_roles import ServiceRole
    from syft.types.errors import SyftException
    from syft.types.result import as_result

    @as_result(SyftException)
    def _call(self: Any, context: Any, uid: Any, result_id: Any = None, **kwargs: Any) -> Any:
        if context.role != ServiceRole.ADMIN:
            reason = refusal(self, context, uid, data_dir)
            if reason is not None:
                log.warning("medsyft site policy refused code %s: %s", uid, reason)
                raise SyftException(public_message=_denial(self, context, uid)
                                    or f"medsyft site policy: {reason}")
        return original(self, context, uid, result_id=result_id, **kwargs).unwrap()

    _call._medsyft_policy = True
    return _call


def refusal(service: Any, context: Any, uid: Any, data_dir: DataDir) -> str | None:
    """Why code *uid* may not run here, or None."""
    key = str(uid)
    if key not in _POLICY_CODE:
        code = service.stash.get_by_uid(context.credentials, uid=uid).unwrap()
        _POLICY_CODE[key] = _has_policy_code(code)
        if key not in _VERDICTS:
            _VERDICTS[key] = classify(code)
    reason = may_run(data_dir, _VERDICTS[key])
    if reason is None and _POLICY_CODE[key]:
        return ("its input or output policy is a custom policy class: code that PySyft runs in the "
                "datasite process, outside the sandbox; submit it with PySyft's built-in policies")
    return reason


def _has_policy_code(code: Any) -> bool:
    from syft.service.policy.policy import UserPolicy

    return any(isinstance(getattr(code, f"{side}_policy_type", None), UserPolicy)
               for side in ("input", "output"))


def _denial(service: Any, context: Any, uid: Any) -> str | None:
    """PySyft's own message for code an owner denied: it carries the owner's reason."""
    code = service.stash.get_by_uid(context.credentials, uid=uid).unwrap()
    status = code.get_status(context).unwrap()
    return str(status.get_status_message_l2(context)) if status.denied else None


# -- custom code runs in the sandbox -------------------------------------------------------
def verdict_of(code: Any) -> CodeVerdict:
    """The code's classification, kept per code id (a submitted code object never changes)."""
    key = str(code.id)
    verdict = _VERDICTS.get(key)
    return verdict if verdict is not None else _VERDICTS.setdefault(key, classify(code))


def _sandboxed(original: Any, data_dir: DataDir) -> Any:
    """PySyft's ``execute_byte_code``, which runs custom code in the sandbox instead of here."""

    def execute_byte_code(code_item: Any, kwargs: dict[str, Any], context: Any) -> Any:
        if verdict_of(code_item).is_medsyft:
            return original(code_item, kwargs, context)
        return run_custom(code_item, kwargs, context, data_dir)

    execute_byte_code._medsyft_sandbox = True  # type: ignore[attr-defined]
    return execute_byte_code


def run_custom(code_item: Any, kwargs: dict[str, Any], context: Any, data_dir: DataDir) -> Any:
    """One call of custom code in a fresh sandbox, answered as PySyft's own execution would be."""
    from syft.service.code.user_code import UserCodeExecutionOutput
    from syft.service.response import SyftError

    name = str(code_item.service_func_name)
    try:
        _refuse_unsupported(code_item, name)
        outcome = sandbox.run(code=str(code_item.parsed_code), function=str(code_item.unique_func_name),
                              name=name, kwargs=dict(kwargs), limits=load_policy(data_dir).sandbox,
                              data_dir=data_dir)
    except MedsyftDomainError as exc:
        outcome = sandbox.Outcome(error=f"medsyft sandbox: {exc}")
    for stream in ("stdout", "stderr"):
        if getattr(outcome, stream):
            log.info("custom code %s printed on %s:\n%s", name, stream, getattr(outcome, stream))
    if outcome.error is None:
        return UserCodeExecutionOutput(user_code_id=code_item.id, stdout=outcome.stdout,
                                       stderr=outcome.stderr, result=outcome.result)
    log.warning("custom code %s failed in the sandbox: %s\n%s", name, outcome.error, outcome.detail)
    message = outcome.error + (f"\n{outcome.detail}" if getattr(context, "dev_mode", False) else "")
    return UserCodeExecutionOutput(user_code_id=code_item.id, stdout=outcome.stdout, stderr=outcome.stderr,
                                   result=SyftError(message=message), errored=True,
                                   safe_error_message=message)


def _refuse_unsupported(code_item: Any, name: str) -> None:
    """What PySyft would hand in-process code and the sandbox cannot: the live datasite."""
    if getattr(code_item, "uses_datasite", False):
        raise SandboxError(f"`{name}` takes the `datasite` argument (jobs, progress), which custom code "
                           "in the sandbox cannot have; drop it")
    if getattr(code_item, "nested_codes", None):
        raise SandboxError(f"`{name}` calls other submitted functions, which custom code in the sandbox "
                           "cannot do; submit one function")
