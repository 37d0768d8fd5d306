"""Review aid for a data owner: what a submitted function could do, and what it lets out.

``medsyft domain review ID`` runs :func:`review_code` on the source of the
function a data scientist asked to run on this hospital's data. The review
reads the code; it never runs it. Flags inform, the owner decides: the review
errs towards flagging, and a clean review is not a proof of safety (code can
hide intent in ways no reader, human or program, reliably sees). What the
review cannot follow is itself flagged, so hostile code should not come out
with only ``info`` lines; the approval policy and the sandbox are what protect.

The review is an analysis, not a list of strings: names are resolved through
imports *and* assignments (``o = os``, ``g = getattr``, ``f = np.load``),
attribute chains, namespace lookups (``vars(os)["system"]``,
``sys.modules["os"]``, ``globals()["__builtins__"]``), default arguments and
calls of the code's own functions; constant strings are evaluated
(``"sys" + "tem"``, ``bytes.fromhex(...).decode()``, ``base64.b64decode``), and
code passed to ``exec``/``eval``/``compile`` that way is reviewed too. Nested
functions, lambdas, comprehensions, class bodies, decorators, default
arguments and every top-level statement (PySyft runs them all) are read.

What is flagged, and how seriously:

* ``network`` (high): imports or calls that can reach other machines
  (``socket``, ``requests``, ``urllib``, ``http``, ``grpc``, ``torch.hub``...);
  a URL passed to any call is flagged at medium.
* ``subprocess`` (high): starting programs or processes (``subprocess``,
  ``os.system``, ``os.popen``, ``os.exec*``, ``os.fork``, ``pty``,
  ``multiprocessing``, ``os.kill``...).
* ``background`` (high): code that outlives the call (``threading``,
  ``atexit``, ``signal``, ``sys.settrace``, ``weakref.finalize``...).
* ``environment`` (high): the process environment (``os.environ``,
  ``dict(os.environ)``, ``os.getenv``, ``/proc/self/environ``), which holds the
  datasite's signing key and admin password.
* ``deserialization`` (high): unpickling runs code (``pickle.loads``,
  ``np.load(allow_pickle=True)``, ``torch.load`` without ``weights_only=True``,
  ``marshal``, ``shelve``, ``dill``, ``yaml.load`` without a safe loader);
  a pickle spelled out in the code is read to name what it would call.
* ``internals`` (high): medsyft's or PySyft's own code and state
  (``domains.data.store`` holds every published image, ``syft`` the server), or a
  ``datasite`` parameter, which PySyft fills with the datasite's API.
* ``file-write`` (medium): writing, moving or deleting files: ``open`` with a
  mode containing ``w``, ``a``, ``x`` or ``+`` (or a mode only known at run
  time), ``Path.write_text``, ``os.rename``, ``shutil``, ``np.save``,
  ``np.memmap`` (unless ``mode="r"``), ``sqlite3``, ``torch.save``,
  ``pickle.dump``, ``df.to_csv(path)``...
* ``file-read`` (medium): reading files or listing folders (``open`` for
  reading, ``np.load``, ``np.fromfile``, ``np.loadtxt``, ``np.memmap``,
  ``Path.read_bytes``, ``Path.open``, ``PIL.Image.open``, ``os.listdir``,
  ``glob``...). A string naming what a datasite keeps secret (``credentials.json``,
  ``server.key``, ``db.sqlite``, ``datasets/``, the audit log, ``/proc/self/...``)
  is high, however it is used.
* ``eval-exec`` (high): running code assembled at run time (``eval``,
  ``exec``, ``compile``), ``builtins``, frames and ``gc`` (which reach every
  object of the process), rewriting ``globals()``, changing a module's
  attributes.
* ``dynamic-import`` (high): ``__import__``, ``importlib``, ``sys.modules``,
  ``sys.path``, ``ctypes``, ``cffi``: loading code or native libraries the
  reader cannot see.
* ``dynamic-access`` (high): "the reviewer cannot see what runs": a name
  computed at run time passed to ``getattr``/``setattr``/``__import__``/
  ``importlib.import_module``/``operator.attrgetter``, a name *built* from
  pieces (even when the review can spell it out: it only hides it from a
  reader), a computed key into a namespace, walking a namespace, any dunder
  attribute (``x.__dict__``, ``().__class__.__base__``) or dunder string,
  defining ``__reduce__``/``__del__``/``__getattr__``..., ``type(name, bases,
  dict)``, passing ``getattr`` around as a value, and a second binding of the
  submitted function's name (PySyft runs the last one).
* ``top-level-code`` (medium): statements beside the function, which PySyft
  runs on the datasite too.
* ``raw-asset-return`` (high): the function returns a private asset, a slice
  of it (``images[:10]``) or a copy (``images.numpy()``, ``images.T``).
* ``per-image-return`` (medium): the function returns values computed per
  image (predictions, per-sample losses, ``images.mean(axis=(1, 2))``, a list
  built one image at a time).
* ``single-image-return`` (medium): the function returns a statistic of one
  image or a few picked ones (``images[0].mean()``, ``images[i].sum()``,
  ``next(iter(images)).max()``, the last loop iteration's ``img.mean()``).
* ``log-leak`` (medium; high for raw data): printing, logging, warning or
  raising an error with private values: PySyft shows a job's output and errors
  to the scientist.
* ``model-weights`` (info): the function returns weights of a model trained on
  the data. Weights can memorise images; differential privacy bounds this.
* ``medsyft-runtime`` (info): the code is *exactly* medsyft's job or release
  template (compared with ``ast``, docstring aside); the flag says what the
  installed runtime returns (weights and aggregates).
* ``medsyft-lookalike`` (high): code named, documented or importing like a
  medsyft job that differs from the template in any statement; the message
  names the first difference.
* ``syntax`` (high): the code does not parse, so it could not be reviewed.
* ``function-missing`` (medium): the function to check was not found, so its
  return values were not checked.
* ``too-complex``: the code is nested too deeply for the review to follow
  (high when its calls could not be checked, medium for its return values).

How return values are judged: every value computed from an asset argument is
*tainted*, whether by assignment, ``+=``, loops and comprehensions over it,
calls that take it (the code's own functions and lambdas are followed into),
or writes into an object (``w.data[:] = images[0]`` taints the model ``w``
belongs to). A returned value is fine when its last step is a known reduction
over all images: ``.mean() .sum() .std() .var() .max() .min() .median()
.item()`` and their ``np``/``torch`` forms without an axis, ``len()``,
``.shape``, ``.size``, ``.ndim``, ``.dtype``, built-in ``sum``/``max``/``min``
of one iterable, and standard metrics such as
``sklearn.metrics.accuracy_score``. Arithmetic on reduced values stays reduced
(``float(total / n)``). A reduction over a *pick* is not an aggregate: indexing
the first axis with a constant or a scalar (``images[0]``, ``images[i]``,
``labels[:1]``, ``images[::2]``), ``next()``, ``np.take``, ``rng.choice``,
``max(images, key=...)``, ``argmax()`` positions, unpacking an asset, or one
loop iteration. Adding up every iteration of a loop over the data
(``total += img.mean()``, ``counts[y] += 1``) is an aggregate again; masks
computed from the data (``images[labels == c]``) and splits sized from the
data (``images[: int(0.8 * len(images))]``) are not picks. Comparisons are
*not* reductions (``x > 0`` is one answer per image). A model becomes "trained
on the data" when it is called or fitted with it; returning its
``state_dict()`` is then ``model-weights``.

Known limits, accepted to keep the review predictable:

* Values are tracked per name over the whole submission, not per line, so a
  name that once held per-image values stays flagged after it is reduced in
  place, and two variables of the same name in different functions share one
  taint.
* A list appended to inside a loop over the data is per-image even when each
  entry is a batch mean (batches may hold one image); return the overall mean.
* An ``if`` inside a loop over the data makes what it adds up a pick (the
  review cannot tell ``if i == 0`` from ``if img.max() > 0``); a ``while`` loop
  indexing the data is a pick as well.
* Slices whose bounds are computed from the data's size are splits, even
  ``images[len(images) - 1:]``.
* A loss returned without ``.item()`` is per-image (the loss function is not
  known to reduce); hand-written numpy training (``w -= lr * X.T @ err``)
  reports its weights as per-image, not as model weights.
* A name the review cannot spell out is flagged (``dynamic-access``), not
  followed: what it stands for is only known at run time.
* Without ``asset_args``, every parameter of the function counts as private.
"""

from __future__ import annotations

import ast
import textwrap
from collections import Counter
from collections.abc import Collection, Iterable

from domains.review.catalog import SEVERITIES, Flag
from domains.review.dynamic import submission_flags
from domains.review.leaks import leak_flags
from domains.review.names import Resolver, SourceContext, find_function
from domains.review.rules import capability_flags
from domains.review.template import template_flags

__all__ = ["Flag", "review_code", "summarize_flags"]


def _parse(source: str) -> ast.Module | Flag:
    # PySyft stores the decorated source as written, possibly indented.
    text = textwrap.dedent(source.lstrip("\ufeff"))
    try:
        return ast.parse(text)
    except SyntaxError as exc:
        line = exc.lineno or 1
        problem = f"{exc.msg} at line {line}"
    except ValueError as exc:  # null bytes, on Python < 3.12
        line, problem = 1, str(exc)
    except (RecursionError, MemoryError):
        return Flag("too-complex", "high", 1, "the code is nested too deeply to be reviewed "
                    "at all; read it yourself or ask for a simpler submission")
    return Flag("syntax", "high", line, f"the code does not parse ({problem}), so it could not "
                "be reviewed; ask for a corrected submission")


def _too_complex(part: str, severity: str) -> Flag:
    return Flag("too-complex", severity, 1, f"the code is nested too deeply to check its {part}; "
                "read them yourself")


def review_code(
    source: str, *, asset_args: Collection[str] = (), function_name: str | None = None
) -> list[Flag]:
    """Flag what a submitted function could do besides compute, and what it lets out.

    Never raises on odd code: code that does not parse gives one ``syntax`` flag.

    Args:
        source: The function's source as PySyft stores it, decorators included.
        asset_args: Parameters bound to private assets; empty means every
            parameter, because the review should err towards flagging.
        function_name: The function to check returns of; default the first
            one defined at top level.

    Returns:
        Flags sorted by line, then severity (high first).

    >>> review_code("def f(images):\\n    return float(images.mean())\\n")
    []
    >>> [flag.rule for flag in review_code("def f(images):\\n    return images[:10]\\n")]
    ['raw-asset-return']
    >>> [flag.rule for flag in review_code("def f(images):\\n    return images[0].mean()\\n")]
    ['single-image-return']
    """
    tree = _parse(source)
    if isinstance(tree, Flag):
        return [tree]
    try:
        context = SourceContext(tree)
        flags = capability_flags(tree, context=context)
    except RecursionError:
        context, flags = None, [_too_complex("calls", "high")]  # something may hide there
    try:
        flags += _function_flags(tree, asset_args, function_name, context)
    except RecursionError:
        flags.append(_too_complex("return values", "medium"))
    return sorted(set(flags), key=_order)


def _function_flags(tree: ast.Module, asset_args: Collection[str], function_name: str | None,
                    context: SourceContext | None) -> list[Flag]:
    """What the submitted function lets out, what runs beside it, and whether it is medsyft's."""
    function = find_function(tree, function_name)
    resolver = context.resolver if context is not None else Resolver(tree)
    flags = leak_flags(tree, function, asset_args, resolver, function_name)
    flags += submission_flags(tree, function)
    flags += template_flags(tree, function, resolver)
    return flags


def _order(flag: Flag) -> tuple[int, int, str, str]:
    return flag.line, SEVERITIES.index(flag.severity), flag.rule, flag.message


def summarize_flags(flags: Iterable[Flag]) -> str:
    """One line counting flags per severity, for the top of a review.

    >>> summarize_flags(review_code("import socket\\ndef f(x):\\n    return x.sum()\\n"))
    '1 high, 0 medium, 0 info'
    """
    counts = Counter(flag.severity for flag in flags)
    return ", ".join(f"{counts[severity]} {severity}" for severity in SEVERITIES)
