"""Review aid for a data owner: what a submitted function could do, and what it returns.

``medsyft domain review ID`` runs :func:`review_code` on the source of the
function a data scientist asked to run on this hospital's data. The review
reads the code; it never runs it. Flags inform, the owner decides: the review
errs towards flagging, and a clean review is not a proof of safety (code can
hide intent in ways no reader, human or program, reliably sees).

What is flagged, and how seriously:

* ``network`` (high): imports or calls that can reach other machines
  (``socket``, ``requests``, ``urllib``, ``http``, ``grpc``, ``torch.hub``...);
  a URL passed to any call is flagged at medium.
* ``subprocess`` (high): starting programs or processes (``subprocess``,
  ``os.system``, ``os.exec*``, ``os.fork``, ``multiprocessing``...).
* ``file-write`` (medium): writing, moving or deleting files: ``open`` with a
  mode containing ``w``, ``a``, ``x`` or ``+`` (or a mode only known at run
  time), ``Path.write_text``, ``os.remove``, ``shutil.rmtree``, ``np.save``,
  ``torch.save``, ``pickle.dump``, ``df.to_csv(path)``...
* ``eval-exec`` (high): running code assembled at run time (``eval``,
  ``exec``, ``compile``), touching ``__builtins__`` or interpreter internals,
  rewriting ``globals()``, changing a module's attributes; ``getattr`` with a
  computed name is medium.
* ``dynamic-import`` (high): ``__import__``, ``importlib``, ``ctypes``,
  ``cffi``: loading code or native libraries the reader cannot see.
* ``raw-asset-return`` (high): the function returns a private asset, a slice
  of it (``images[:10]``) or a copy (``images.numpy()``, ``images.T``).
* ``per-image-return`` (medium): the function returns values computed per
  image (predictions, per-sample losses, a list built one image at a time).
* ``model-weights`` (info): the function returns weights of a model trained on
  the data. Weights can memorise images; differential privacy bounds this.
* ``medsyft-runtime`` (info): the code calls medsyft's own installed training
  runtime; the flag says what that runtime returns (weights and aggregates).
* ``syntax`` (high): the code does not parse, so it could not be reviewed.
* ``function-missing`` (medium): the function to check was not found, so its
  return values were not checked.
* ``too-complex``: the code is nested too deeply for the review to follow
  (high when its calls could not be checked, medium for its return values).

How return values are judged: every value computed from an asset argument is
*tainted*, whether by assignment, ``+=``, loops and comprehensions over it, or
calls that take it. A returned value is fine when its last step is a known
reduction over all images: ``.mean() .sum() .std() .var() .max() .min()
.median() .item()`` and their ``np``/``torch`` forms without an axis,
``len()``, ``.shape``, ``.size``, ``.ndim``, ``.dtype``, built-in
``sum``/``max``/``min`` of one iterable, and standard metrics such as
``sklearn.metrics.accuracy_score``. Arithmetic on reduced values stays reduced
(``float(total / n)``). Comparisons are *not* reductions (``x > 0`` is one
answer per image). A model becomes "trained on the data" when it is called or
fitted with it; returning its ``state_dict()`` is then ``model-weights``.

Known limits, accepted to keep the review predictable:

* Values are tracked per name over the whole function, not per line, so a name
  that once held per-image values stays flagged after it is reduced in place.
* A list appended to inside a loop over the data is per-image even when each
  entry is a batch mean (batches may hold one image); return the overall mean.
* A loss returned without ``.item()`` is per-image (the loss function is not
  known to reduce); hand-written numpy training (``w -= lr * X.T @ err``)
  reports its weights as per-image, not as model weights.
* Keeping only the last loop iteration's value (``last = img.mean()``) is not
  flagged.
* Without ``asset_args``, every parameter of the function counts as private.
"""

from __future__ import annotations

import ast
import textwrap
from collections import Counter
from collections.abc import Collection, Iterable

from domains.review_rules import SEVERITIES, Flag, capability_flags
from domains.review_taint import review_returns

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
    """Flag what a submitted function could do besides compute, and what it returns.

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
    """
    tree = _parse(source)
    if isinstance(tree, Flag):
        return [tree]
    try:
        flags = capability_flags(tree)
    except RecursionError:
        flags = [_too_complex("calls", "high")]  # something may hide there
    try:
        flags += review_returns(tree, asset_args, function_name)
    except RecursionError:
        flags.append(_too_complex("return values", "medium"))
    return sorted(set(flags), key=_order)


def _order(flag: Flag) -> tuple[int, int, str, str]:
    return flag.line, SEVERITIES.index(flag.severity), flag.rule, flag.message


def summarize_flags(flags: Iterable[Flag]) -> str:
    """One line counting flags per severity, for the top of a review.

    >>> summarize_flags(review_code("import socket\\ndef f(x):\\n    return x.sum()\\n"))
    '1 high, 0 medium, 0 info'
    """
    counts = Counter(flag.severity for flag in flags)
    return ", ".join(f"{counts[severity]} {severity}" for severity in SEVERITIES)
