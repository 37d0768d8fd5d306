"""What the return-value review knows about library calls and attributes.

:mod:`domains.review.taint` follows values derived from the private assets;
these tables tell it what a call does to such a value. A *reducer* summarises
all images into one statistic (``images.mean()``, ``np.sum(x)``,
``accuracy_score(y, p)``); a count method gives a number of images; a view or
copy hands back the asset itself in another form; a mutator makes its receiver
collect what it is given; a fit method makes a model learn from it.

Names are the dotted names of :func:`domains.review.names.qualname`
(``np.mean`` is ``numpy.mean``) or bare method names (``.mean()``).
"""

from __future__ import annotations

import ast

# What a call or attribute gives back when its receiver or argument is private.
VIEW_METHODS = frozenset({"numpy", "tolist", "copy", "cpu", "cuda", "detach", "clone", "to",
                          "astype", "reshape", "view", "flatten", "ravel", "squeeze",
                          "unsqueeze", "permute", "transpose", "swapaxes", "contiguous",
                          "float", "double", "half", "int", "long", "tobytes", "to_numpy",
                          "get", "__array__"})
COPY_FUNCS = frozenset({"list", "tuple", "sorted", "reversed", "iter", "enumerate", "zip",
                        "numpy.array", "numpy.asarray", "numpy.copy", "numpy.ascontiguousarray",
                        "numpy.stack", "numpy.concatenate", "torch.tensor", "torch.as_tensor",
                        "torch.from_numpy", "torch.stack", "torch.cat", "copy.copy",
                        "copy.deepcopy", "bytes", "bytearray"})
COUNT_METHODS = frozenset({"numel", "nelement", "size", "__len__"})
COUNT_ATTRS = frozenset({"shape", "size"})
META_ATTRS = frozenset({"ndim", "dtype", "device", "nbytes", "itemsize", "is_cuda", "__name__",
                        "__qualname__", "__module__",
                        "requires_grad", "layout"})
MUTATORS = frozenset({"append", "extend", "insert", "add", "update", "setdefault",
                      "appendleft", "extendleft", "put", "put_nowait", "__setitem__", "push"})
FIT_METHODS = frozenset({"fit", "partial_fit", "fit_transform", "fit_predict", "train",
                         "train_step", "train_on_batch", "forward", "learn"})
PRIVATE_WRAPPERS = frozenset({"make_private", "make_private_with_epsilon"})
# Calls that keep a few elements of their input: one image is no aggregate. (Splitting
# into parts keeps all of them: ``np.array_split`` is not here, ``np.array_split(x, n)[0]``
# picks by its index.)
SELECT_FUNCS = frozenset({"next", "random.choice", "random.choices", "random.sample",
                          "numpy.random.choice", "numpy.take", "numpy.compress", "numpy.extract",
                          "torch.index_select", "torch.select", "torch.narrow", "torch.take",
                          "torch.gather", "itertools.islice", "heapq.nlargest", "heapq.nsmallest",
                          "operator.getitem", "operator.itemgetter"})
SELECT_METHODS = frozenset({"take", "select", "narrow", "index_select", "gather", "choice",
                            "choices", "head", "tail", "sample", "nlargest", "nsmallest",
                            "compress", "pop", "popleft", "popitem", "__getitem__"})
# Calls that return every position once, in some order: indexing with them shuffles.
PERMUTATIONS = frozenset({"permutation", "randperm", "arange", "argsort", "shuffle"})
# Views that move the image axis: after them, any index may pick images.
AXIS_ATTRS = frozenset({"T", "mT", "H", "mH", "flat"})
AXIS_METHODS = frozenset({"transpose", "swapaxes", "swapdims", "permute", "moveaxis", "movedim",
                          "rollaxis", "reshape", "view", "flatten", "ravel"})
# Calls that return positions in their input: indexing with them picks elements.
INDEX_FUNCS = frozenset(f"{module}.{name}" for module in ("numpy", "torch") for name in (
    "argmax", "argmin", "nonzero", "argwhere", "flatnonzero"))
INDEX_METHODS = frozenset({"argmax", "argmin", "nonzero", "argwhere", "flatnonzero"})
# Calls that write into one of their arguments (its position).
MUTATING_FUNCS = {"numpy.copyto": 0, "numpy.put": 0, "numpy.place": 0, "numpy.putmask": 0,
                  "setattr": 0, "object.__setattr__": 0,
                  "torch.nn.utils.vector_to_parameters": 1}
# In-place methods that overwrite their receiver (torch's trailing "_" and numpy's few).
INPLACE_METHODS = frozenset({"load_state_dict", "fill", "put", "itemset", "resize", "set_"})
# Where a job's output goes that PySyft shows to the scientist (job logs, error messages).
PRINTERS = frozenset({"print", "pprint.pprint", "pprint.pp", "warnings.warn", "sys.stdout.write",
                      "sys.stderr.write", "sys.stdout.writelines", "sys.stderr.writelines",
                      "logging.debug", "logging.info", "logging.warning", "logging.error",
                      "logging.critical", "logging.exception", "logging.log"})
LOG_METHODS = frozenset({"debug", "info", "warning", "warn", "error", "critical", "exception",
                         "log"})


def is_inplace(method: str) -> bool:
    """``x.copy_(y)``, ``x.add_(y)``: torch's in-place methods end in one underscore."""
    return method in INPLACE_METHODS or (
        len(method) > 1 and method.endswith("_") and not method.startswith("_"))

# Statistics over all images: see is_reducer for the argument rules of each table.
_REDUCER_METHODS = frozenset({"mean", "sum", "std", "var", "max", "min", "median", "item",
                              "prod", "all", "any", "nanmean", "nansum", "norm", "nunique",
                              "value_counts", "describe", "count", "count_nonzero"})
_AXIS_REDUCERS = frozenset(
    f"{module}.{name}" for module in ("numpy", "torch") for name in (
        "mean", "sum", "std", "var", "max", "min", "median", "average", "amax", "amin", "prod",
        "nanmean", "nansum", "nanstd", "nanvar", "nanmax", "nanmin", "nanmedian",
        "count_nonzero", "ptp", "all", "any"))
_QUANTILES = frozenset(f"numpy.{name}" for name in (
    "percentile", "quantile", "nanpercentile", "nanquantile")) | {"torch.quantile"}
_WHOLE_REDUCERS = frozenset({"numpy.bincount", "numpy.histogram", "numpy.unique",
                             "torch.bincount", "torch.histc", "torch.unique",
                             "collections.Counter", "math.fsum", "math.prod"})
_BUILTIN_REDUCERS = frozenset({"sum", "max", "min", "any", "all"})
_METRICS = frozenset({"accuracy_score", "balanced_accuracy_score", "roc_auc_score",
                      "average_precision_score", "f1_score", "precision_score", "recall_score",
                      "log_loss", "brier_score_loss", "mean_squared_error",
                      "mean_absolute_error", "r2_score", "matthews_corrcoef",
                      "cohen_kappa_score", "confusion_matrix", "classification_report",
                      "top_k_accuracy_score", "jaccard_score", "hamming_loss", "zero_one_loss"})
_LOSSES = frozenset({"cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits",
                     "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss",
                     "kl_div"})


def _no_axis(call: ast.Call) -> bool:
    return all(
        kw.arg is not None
        and (kw.arg not in ("axis", "dim")
             or (isinstance(kw.value, ast.Constant) and kw.value.value is None))
        for kw in call.keywords
    )


# Entry points of medsyft's own installed code that approved jobs call. What they return
# is fixed by the hospital's installed package, not by the submitted code: model weights
# and aggregate metrics, never per-image values. Review names them instead of flagging.
TRUSTED_RUNTIMES: dict[str, str] = {
    "domains.runtime.entry.run_job": (
        "runs medsyft's installed federated-training runtime with the job constant shown "
        "above: each call evaluates then trains the incoming model and returns its weights "
        "(weights can memorise images; differential privacy bounds this; under HE they leave "
        "encrypted) and aggregate validation metrics (under DP: noisy counts only)"
    ),
    "domains.runtime.entry.run_release": (
        "runs medsyft's installed release of a finished encrypted job: decrypts the final model "
        "this datasite evaluated last and returns it masked by this site's share; the scientist "
        "can read the model only when every site named in the release constant approved"
    ),
    "domains.runtime.entry.run_evaluation": (
        "runs medsyft's installed cross-site evaluation: scores the job's final model once on the "
        "test dataset the labels asset belongs to and returns only counts with Gaussian noise, "
        "charged to that dataset's ε budget"
    ),
}


def is_reducer(node: ast.Call, qual: str | None, method: str | None) -> bool:
    """Whether the call summarises all its input into one statistic.

    ``method`` is the called method's name when the call is on a value (not a
    module), else None; ``qual`` is the call's dotted name, if any.
    """
    if method is not None:
        return method in _REDUCER_METHODS and not node.args and _no_axis(node)
    qual = qual or ""
    if qual in TRUSTED_RUNTIMES:
        return True
    module, _, name = qual.rpartition(".")
    if qual in _WHOLE_REDUCERS or module == "statistics":
        return True
    if module.startswith("sklearn.metrics") and name in _METRICS:
        return True
    if module == "torch.nn.functional" and name in _LOSSES:
        return all(kw.arg != "reduction" or (
            isinstance(kw.value, ast.Constant) and kw.value.value != "none")
            for kw in node.keywords)
    if qual in _BUILTIN_REDUCERS:
        return len(node.args) == 1 and not isinstance(node.args[0], ast.Starred)
    if qual in _QUANTILES:  # np.percentile(x, 95): the axis comes third
        return len(node.args) <= 2 and _no_axis(node)
    return qual in _AXIS_REDUCERS and len(node.args) <= 1 and _no_axis(node)
