"""What the dashboard shows of the GPUs: the status page links its GPU page, the
GPU pages answer, and the scheduler has each worker's GPU from NVML on that
worker (the name and memory the GPU pages plot)."""
import json

import dashboard_http
from distributed import get_client

client = get_client()
info = client.scheduler_info(n_workers=-1)


def page(path: str) -> tuple[int, str]:
    return dashboard_http.page(client, path)


status, html = page("status")
answers = {path: page(path)[0] for path in ("gpu", "individual-gpu-memory",
                                             "individual-gpu-utilization")}
print("DASHBOARD " + json.dumps({
    "status": status,
    "links_gpu_page": 'href="gpu"' in html,
    "pages": answers,
    "gpus": {str(w["name"]): {**w.get("gpu", {}), **w["metrics"].get("gpu", {})}
             for w in info["workers"].values()},
}), flush=True)
