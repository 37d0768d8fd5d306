"""The fixed cost of one PySyft call, on one idle datasite, by payload and result size.

Usage::

    .venv/bin/python benchmarks/syft_call_cost.py

Deploys one datasite, approves a function with the same input policy as a
medsyft job (labels asset, a constant, a scientist-owned dict) that does no
work, and times the three legs a round pays per site: uploading the payload,
executing the approved function, fetching the result. Medians of 6 calls for
payload and result vectors of 10 and 47,170 float32 values (the small CNN).
"""

from __future__ import annotations

import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

CODE = '''
import syft as sy
from syft.service.policy.policy import OutputPolicyExecuteCount

@sy.syft_function(
    input_policy=sy.MixedInputPolicy(client=client, labels=labels, job=sy.Constant(val={"a": 1}),
                                     payload=dict),
    output_policy=OutputPolicyExecuteCount(limit=1000),
)
def echo(labels, job, payload):
    import numpy as np
    return {"weights": np.zeros(payload["ret"], dtype=np.float32)}
'''


def main() -> None:
    import syft as sy

    from domains import Datasite
    from domains.lifecycle import free_ports
    from domains.quiet import quiet

    with tempfile.TemporaryDirectory() as tmp:
        site = Datasite.deploy(Path(tmp) / "bench", name="bench", port=free_ports(1)[0])
        try:
            site.publish(name="d", synthetic_count=1000)
            password = site.add_scientist("bench@lab.example")
            with quiet():
                client = sy.login(url=site.url, email="bench@lab.example", password=password)
                labels = client.datasets["d"].assets["labels"]
                path = Path(tmp) / "echo_fn.py"
                path.write_text(CODE)
                spec = importlib.util.spec_from_file_location("echo_fn", path)
                assert spec is not None and spec.loader is not None
                module = importlib.util.module_from_spec(spec)
                module.client, module.labels = client, labels  # type: ignore[attr-defined]
                spec.loader.exec_module(module)
                request = client.code.request_code_execution(module.echo)
            site.approve(str(request.id))
            rows = []
            for send_n, ret_n in [(10, 10), (47_170, 10), (10, 47_170), (47_170, 47_170)]:
                legs: dict[str, list[float]] = {"upload_s": [], "execute_s": [], "get_s": []}
                for _ in range(6):
                    with quiet():
                        payload = {"weights": np.zeros(send_n, np.float32), "ret": ret_n}
                        t0 = time.perf_counter()
                        pointer = sy.ActionObject.from_obj(payload).send(client)
                        t1 = time.perf_counter()
                        out = client.code.echo(labels=labels, job={"a": 1}, payload=pointer)
                        t2 = time.perf_counter()
                        out.get()
                        t3 = time.perf_counter()
                    legs["upload_s"].append(t1 - t0)
                    legs["execute_s"].append(t2 - t1)
                    legs["get_s"].append(t3 - t2)
                medians = {k: statistics.median(v) for k, v in legs.items()}
                rows.append({"sent values": send_n, "returned values": ret_n, **medians,
                             "total_s": sum(medians.values())})
        finally:
            site.stop()
    print(pd.DataFrame(rows).round(3).to_string(index=False))


if __name__ == "__main__":
    main()
