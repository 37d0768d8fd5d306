"""PySyft 0.9.5 access rules medsyft enforces, applied inside the datasite process only.

PySyft 0.9.5 serves more than medsyft's threat model allows (docs/privacy.md): anyone,
logged in or not, may list datasets and mocks and fetch the "mock" side of any object whose
id they hold; for an output that mock is the approved code run on the mock inputs, which
holds real data as soon as the code reads files itself. Its login answers differently for a
missing email and a wrong password and never slows down. Each rule below is the narrowest
patch of one PySyft 0.9.5 check that closes one of these:

- **guests see metadata only**: an unauthenticated client or a GUEST account gets
  ``metadata`` and nothing else, whatever id it holds; calls below data owner run blocking
  only (PySyft's queued path skips its role checks);
- **outputs are read by their owner only, and never as mocks**: below data owner, the mock
  side of an object is served only for a dataset's asset, a pointer only to an object the
  caller may read, an action only on objects the caller may read; an output's mock is
  replaced by ``None`` before it is stored;
- **no self sign-up**: an account is created only by a data owner;
- **logins**: one message and one bcrypt check for a missing email and a wrong password;
  failures throttled per email and per client address (:class:`LoginThrottle`), each lockout
  written to the audit log; one password-reset answer for every email.

Data owners and admins are not restricted: they hold the data already. The rules mirror
0.9.5 function bodies, so under any other PySyft version the datasite refuses to start.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from domains.errors import DeployError
from domains.site import client_cert
from domains.site.audit import AuditLog

SUPPORTED_SYFT = "0.9.5"
# A guest account's own login asks for its own user record; nothing else is a guest's.
GUEST_PATHS = frozenset({"metadata", "metadata.get_metadata", "user.get_current_user"})
ANY_ROLE_PATHS = frozenset({"metadata", "queue"})  # answered before PySyft's role checks
GUEST_NOUNS = {"dataset": "datasets", "action": "data objects", "output": "outputs",
               "code": "code requests", "request": "requests", "blob_storage": "stored files"}
ACCOUNT_HINT = "log in with the account the data owner created for you (medsyft domain add-scientist)"
NON_BLOCKING = ("this datasite runs API calls blocking only (blocking=True): "
                "PySyft's queued path skips its role checks")
ASSET_MOCKS_ONLY = ("only dataset assets have mocks on this datasite: PySyft's mock copy of an "
                    "output can hold real data, so it is never served")
OWN_OUTPUTS_ONLY = "you can fetch only your own uploads and the outputs of your own approved calls"
READABLE_ONLY = ("computing on data objects you cannot read is not allowed on this datasite; "
                 "submit code for the data owner's review instead")
NO_SIGNUP = ("You have no permission to create an account: self sign-up is off on medsyft "
             "datasites; ask the data owner for one (medsyft domain add-scientist)")

log = logging.getLogger(__name__)


def apply(audit_path: str | os.PathLike[str]) -> list[str]:
    """Install every rule into this process's PySyft; returns their names, for the log.

    *audit_path* is the datasite's ``audit.jsonl``: login lockouts are written there.
    Raises DeployError under another PySyft version: a datasite must not run unguarded.
    """
    import syft

    if syft.__version__ != SUPPORTED_SYFT:
        raise DeployError(
            f"PySyft {syft.__version__} is installed, but medsyft's datasite access rules are "
            f"written against {SUPPORTED_SYFT}; install syft=={SUPPORTED_SYFT}"
        )
    return [*_apply_access_rules(), *_apply_login_rules(Path(audit_path))]


def _apply_access_rules() -> list[str]:
    from syft.server.server import Server
    from syft.service.action.action_service import ActionService
    from syft.service.user.user_service import UserService

    _patch(Server, "handle_api_call_with_unsigned_result", _gate)
    for name, check in (("get", _check_get), ("get_pointer", _check_get_pointer),
                        ("get_mock", _check_get_mock), ("execute", _check_execute)):
        _patch(ActionService, name, _below_owner(check))
    _patch(ActionService, "set_result_to_store", _drop_output_mock)
    _patch(UserService, "register", _owner_creates_accounts)
    return ["guests see metadata only", "blocking calls only", "asset mocks only",
            "own objects only", "output mocks dropped", "no self sign-up"]


def _patch(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    """Replace ``cls.name`` by ``make(original)`` once; PySyft looks methods up by name at every
    call (``getattr(service, method)``) and by ``__qualname__``, which ``functools.wraps`` keeps."""
    original = getattr(cls, name)
    if getattr(original, "_medsyft_guard", False):
        return
    guarded = functools.wraps(original)(make(original))
    guarded._medsyft_guard = True  # type: ignore[attr-defined]
    setattr(cls, name, guarded)


def _role(context: Any) -> Any:
    """The caller's role: internal contexts PySyft builds without one carry ``NONE``."""
    from syft.service.user.user_roles import ServiceRole

    if context.role != ServiceRole.NONE:
        return context.role
    return context.server.get_role_for_credentials(context.credentials)


def _is_owner(role: Any) -> bool:
    from syft.service.user.user_roles import ServiceRole

    return bool(role.value >= ServiceRole.DATA_OWNER.value)


# -- every API call ---------------------------------------------------------------------------
def _gate(original: Callable[..., Any]) -> Callable[..., Any]:
    """``Server.handle_api_call_with_unsigned_result`` refusing guests and queued calls first.

    It is the one place every ``/api_call`` passes, blocking or queued; PySyft's own
    ``allow_guest_sessions`` switch covers only the blocking branch.
    """

    def handle(self: Any, api_call: Any, *args: Any, **kwargs: Any) -> Any:
        credentials = getattr(api_call, "credentials", None)
        if credentials is not None:  # unsigned calls: PySyft refuses them itself
            refusal = _refusal(self.get_role_for_credentials(credentials), api_call.message)
            if refusal is not None:
                from syft.service.response import SyftError

                return SyftError(message=refusal)
        return original(self, api_call, *args, **kwargs)

    return handle


def _refusal(role: Any, message: Any) -> str | None:
    from syft.service.user.user_roles import ServiceRole

    path = str(message.path)
    if role in (ServiceRole.GUEST, ServiceRole.NONE) and path not in GUEST_PATHS:
        noun = GUEST_NOUNS.get(path.split(".")[0])
        if noun is None:
            return f"a guest sees only this datasite's metadata; {ACCOUNT_HINT}"
        return f"{noun} are visible to data scientists of this datasite only; {ACCOUNT_HINT}"
    if not _is_owner(role) and not message.blocking and path not in ANY_ROLE_PATHS:
        return NON_BLOCKING
    return None


# -- action service ---------------------------------------------------------------------------
def _below_owner(check: Callable[[Any, dict[str, Any]], None]) -> Callable[[Any], Any]:
    """Wrap a decorated ActionService method: *check* sees its bound arguments and raises to
    refuse; callers with a data owner's role pass unchecked."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(original)  # follows __wrapped__ to PySyft's own function

        def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
            plain = {k: v for k, v in kwargs.items() if k != "communication_protocol"}
            bound = signature.bind(self, *args, **plain)
            bound.apply_defaults()
            context = bound.arguments["context"]
            if not _is_owner(_role(context)):
                check(context, bound.arguments)
            return original(self, *args, **kwargs)

        return guarded

    return make


def _refuse(message: str) -> None:
    from syft.types.errors import SyftException

    raise SyftException(public_message=message)


def _is_asset(context: Any, uid: Any) -> bool:
    """Whether *uid* is the action id of an asset of a dataset the caller can see."""
    stash = context.server.services.dataset.stash
    return bool(stash.search_action_ids(context.credentials, uid=uid.id).unwrap())


def _readable(context: Any, uid: Any) -> bool:
    from syft.service.action.action_permissions import ActionObjectREAD

    stash = context.server.services.action.stash
    return bool(stash.has_permissions([ActionObjectREAD(uid=uid.id, credentials=context.credentials)]))


def _check_get(context: Any, args: dict[str, Any]) -> None:
    from syft.service.action.action_object import TwinMode

    if args["twin_mode"] != TwinMode.PRIVATE and not _is_asset(context, args["uid"]):
        _refuse(ASSET_MOCKS_ONLY)


def _check_get_mock(context: Any, args: dict[str, Any]) -> None:
    if not _is_asset(context, args["uid"]):
        _refuse(ASSET_MOCKS_ONLY)


def _check_get_pointer(context: Any, args: dict[str, Any]) -> None:
    """PySyft answers an object the caller cannot read with its mock (or an empty pointer)."""
    uid = args["uid"]
    if not _readable(context, uid) and not _is_asset(context, uid):
        _refuse(OWN_OUTPUTS_ONLY)


def _check_execute(context: Any, args: dict[str, Any]) -> None:
    """PySyft runs an action on anyone's object and answers with the result's mock side."""
    from syft.service.action.action_object import ActionType

    action = args["action"]
    if action.action_type in (ActionType.CREATEOBJECT, ActionType.SYFTFUNCTION):
        return  # a new object, or an approved function: user code's own checks apply
    ids = [action.remote_self, *action.args, *action.kwargs.values()]
    if not all(_readable(context, uid) for uid in ids if uid is not None):
        _refuse(READABLE_ONLY)


def _drop_output_mock(original: Callable[..., Any]) -> Callable[..., Any]:
    """``ActionService.set_result_to_store`` keeping an output's private side only.

    PySyft runs approved code a second time on the mock inputs and stores that result as
    the output's mock, with read permission for everyone on its blob. The mock becomes
    ``None``: the shape PySyft stores for a small result, holding nothing.
    """

    def store(self: Any, result_action_object: Any, *args: Any, **kwargs: Any) -> Any:
        from syft.service.action.action_service import wrap_result
        from syft.types.twin_object import TwinObject

        if isinstance(result_action_object, TwinObject):
            result_action_object = TwinObject(
                id=result_action_object.id,
                private_obj=result_action_object.private_obj,
                mock_obj=wrap_result(result_action_object.id, None),
            )
        return original(self, result_action_object, *args, **kwargs)

    return store


# -- accounts ---------------------------------------------------------------------------------
def _owner_creates_accounts(original: Callable[..., Any]) -> Callable[..., Any]:
    """``UserService.register`` as with sign-up disabled, whatever the stored setting says."""

    def register(self: Any, context: Any, new_user: Any) -> Any:
        from syft.service.user.user_roles import ServiceRole

        creator = (ServiceRole.GUEST if new_user.created_by is None
                   else self.get_role_for_credentials(new_user.created_by).unwrap())
        if not _is_owner(creator):
            _refuse(NO_SIGNUP)
        return original(self, context, new_user)

    return register


# -- logins -----------------------------------------------------------------------------------
MAX_FAILURES = {"email": 5, "address": 20}  # within WINDOW_S, per email and per client address
WINDOW_S = 15 * 60.0
LOCKOUT_S = 15 * 60.0
THROTTLED = (f"too many failed logins for this account or from this address; try again in "
             f"{int(LOCKOUT_S // 60)} minutes, or ask the data owner")
RESET_BY_OWNER = ("password resets on this datasite go through its data owner; "
                  "ask them for a new password")
Key = tuple[str, str]  # ("email", "ana@uni.example") or ("address", "10.0.0.7")

_client_address: ContextVar[str | None] = ContextVar("medsyft_client_address", default=None)


class LoginThrottle:
    """Failed logins per key within a sliding window; ``max_failures`` of them lock the key.

    Attempts refused while a key is locked do not count (under a steady attack the lock
    would never end), and a correct password is refused too: the answer must not tell.
    Only a successful login clears an email's failures; an address's expire with the window.

    >>> clock = iter([0.0, 1.0, 2.0, 3.0]).__next__
    >>> throttle = LoginThrottle(max_failures={"email": 2}, window_s=60, lockout_s=60, clock=clock)
    >>> throttle.failed([("email", "a@b.c")]), throttle.failed([("email", "a@b.c")])
    ([], [('email', 'a@b.c')])
    >>> throttle.locked([("email", "a@b.c")])
    True
    """

    MAX_KEYS = 100_000  # forget stale keys past this many: random emails must not grow memory

    def __init__(self, *, max_failures: dict[str, int], window_s: float, lockout_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self.clock = clock
        self._failures: dict[Key, deque[float]] = {}
        self._until: dict[Key, float] = {}
        self._lock = threading.Lock()

    def locked(self, keys: list[Key]) -> bool:
        now = self.clock()
        with self._lock:
            return any(self._until.get(key, 0.0) > now for key in keys)

    def failed(self, keys: list[Key]) -> list[Key]:
        """Count one failure under each key; returns the keys whose lockout starts now."""
        now, started = self.clock(), []
        with self._lock:
            for key in keys:
                times = self._failures.setdefault(key, deque())
                times.append(now)
                while times[0] <= now - self.window_s:
                    times.popleft()
                if len(times) >= self.max_failures[key[0]]:
                    self._until[key] = now + self.lockout_s
                    times.clear()
                    started.append(key)
            if len(self._failures) > self.MAX_KEYS:
                self._forget_stale(now)
        return started

    def succeeded(self, key: Key) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _forget_stale(self, now: float) -> None:
        self._failures = {k: t for k, t in self._failures.items() if t and t[-1] > now - self.window_s}
        self._until = {k: u for k, u in self._until.items() if u > now}


@functools.cache
def dummy_hash() -> str:
    """What a login for a missing email is checked against: a bcrypt hash of a random password
    nobody holds, at the cost PySyft gives users (12), so that the answer takes as long as a
    wrong password's. It guards no secret, so the launcher computes it once before it forks its
    datasites (:mod:`domains.site.launcher`): one bcrypt hash (0.25 s of CPU) instead of one each.
    """
    from syft.service.user.user import salt_and_hash_password

    return str(salt_and_hash_password(os.urandom(16).hex(), 12)[1])


def _apply_login_rules(audit_path: Path) -> list[str]:
    from syft.service.user.user_service import UserService

    throttle = LoginThrottle(max_failures=MAX_FAILURES, window_s=WINDOW_S, lockout_s=LOCKOUT_S)
    _patch(UserService, "exchange_credentials",
           lambda original: _login(throttle, audit_path, dummy_hash()))
    _patch(UserService, "forgot_password", lambda original: _reset_by_owner())
    return ["uniform throttled logins", "no password-reset answers"]


def _login(throttle: LoginThrottle, audit_path: Path, dummy_hash: str) -> Callable[..., Any]:
    """``UserService.exchange_credentials`` (PySyft 0.9.5's body) with one answer for a missing
    email and a wrong password, both after one bcrypt check, and a throttle in front."""

    def exchange_credentials(self: Any, context: Any) -> Any:
        from syft.abstract_server import ServerType
        from syft.service.response import SyftSuccess
        from syft.service.user.errors import UserEnclaveAdminLoginError
        from syft.service.user.user import UserPrivateKey, check_pwd
        from syft.service.user.user_roles import ServiceRole
        from syft.types.errors import CredentialsError

        if context.login_credentials is None:
            _refuse("Invalid login credentials")
        email, address = str(context.login_credentials.email), _client_address.get()
        bound = client_cert.binding()  # mutual TLS: the account's own certificate, before any lookup
        if bound is not None and (why := bound.refusal(email, client_cert.certificate_name.get())):
            _refuse(why)
        keys = [("email", email.strip().lower())] + ([("address", address)] if address else [])
        if throttle.locked(keys):
            _refuse(THROTTLED)
        user = _user_by_email(self, email)
        password_ok = check_pwd(context.login_credentials.password,
                                user.hashed_password if user is not None else dummy_hash)
        if user is None or not password_ok:
            for key in throttle.failed(keys):
                _audit_lockout(audit_path, key, email=email, address=address)
            _refuse(CredentialsError.public_message)
        throttle.succeeded(keys[0])
        if context.server.server_type == ServerType.ENCLAVE and user.role == ServiceRole.ADMIN:
            _refuse(UserEnclaveAdminLoginError.public_message)
        return SyftSuccess(message="Login successful.", value=user.to(UserPrivateKey))

    return exchange_credentials


def _user_by_email(service: Any, email: str) -> Any:
    from syft.store.document_store_errors import NotFoundException

    try:
        return service.stash.get_by_email(credentials=service.root_verify_key, email=email).unwrap()
    except NotFoundException:
        return None


def _audit_lockout(audit_path: Path, key: Key, *, email: str, address: str | None) -> None:
    scope, value = key
    try:
        AuditLog(audit_path).append(
            "login-throttled", actor=address or "in-process", subject=value, scope=scope,
            email=email, failures=MAX_FAILURES[scope], window_s=WINDOW_S, lockout_s=LOCKOUT_S,
        )
    except OSError:  # the lockout holds even when the log cannot be written; say so
        log.exception("could not write the login lockout of %s %s to %s", scope, value, audit_path)


def _reset_by_owner() -> Callable[..., Any]:
    """``UserService.forgot_password`` with one answer: PySyft 0.9.5 refuses admins by name (so
    it tells accounts apart) and notifies on others; a medsyft password is reissued by its owner."""

    def forgot_password(self: Any, context: Any, email: str) -> Any:
        from syft.service.response import SyftSuccess

        return SyftSuccess(message=RESET_BY_OWNER)

    return forgot_password


def app_factory() -> Any:
    """PySyft's FastAPI app, wrapped so that a login knows which client address it came from and
    ``/medsyft/v1/version`` answers (:mod:`domains.site.version_route`)."""
    from syft.server.uvicorn import app_factory as syft_app_factory

    from domains.site.version_route import VersionRoute

    app = syft_app_factory()
    os.environ.pop("SYFT_DB_URL", None)  # read by PySyft just now; it may hold the database password
    return VersionRoute(_RememberClientAddress(app))


class _RememberClientAddress:
    """ASGI wrapper: the peer address of each HTTP request, for the login throttle.

    ``X-Forwarded-For`` is not read: a datasite is addressed directly, and the header is
    whatever the client says.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        client = scope.get("client") if scope["type"] == "http" else None
        token = _client_address.set(str(client[0]) if client else None)
        cert = client_cert.certificate_name.set(client_cert.scope_name(scope) if scope["type"] == "http"
                                                else None)
        try:
            await self.app(scope, receive, send)
        finally:
            client_cert.certificate_name.reset(cert)
            _client_address.reset(token)
