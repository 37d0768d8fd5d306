"""The data owner's review: what submitted code could do, what it lets out, and what it will cost.

:mod:`~domains.review.requests` is the workflow (list, review, approve, deny: :class:`RequestBook`);
:func:`review_code` (:mod:`~domains.review.code_review`) is the static review aid, built from the
taint analysis (:mod:`~domains.review.taint`, :mod:`~domains.review.values`,
:mod:`~domains.review.leaks`) and capability rules (:mod:`~domains.review.rules`,
:mod:`~domains.review.files`, :mod:`~domains.review.dynamic`) over name resolution
(:mod:`~domains.review.names`); :mod:`~domains.review.privacy` shows a medsyft job's ε, roster and
HE settings; :mod:`~domains.review.code_policy` is the site policy deciding what may be approved.

Names are imported on first use (:mod:`domains.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from domains.lazy import lazy_exports

if TYPE_CHECKING:
    from domains.review.catalog import Flag
    from domains.review.code_policy import SitePolicy, load_policy
    from domains.review.code_review import review_code, summarize_flags
    from domains.review.privacy import PrivacyReview, review_privacy
    from domains.review.requests import RequestBook, ReviewReport

__all__, __getattr__, __dir__ = lazy_exports("domains.review", {
    "Flag": "domains.review.catalog",
    "SitePolicy": "domains.review.code_policy",
    "load_policy": "domains.review.code_policy",
    "review_code": "domains.review.code_review",
    "summarize_flags": "domains.review.code_review",
    "PrivacyReview": "domains.review.privacy",
    "review_privacy": "domains.review.privacy",
    "RequestBook": "domains.review.requests",
    "ReviewReport": "domains.review.requests",
})
