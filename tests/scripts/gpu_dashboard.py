"""What the dashboard shows of the GPUs: the status page links its GPU page, the
GPU pages answer, and the scheduler has each worker's GPU from NVML on that
worker (the name and memory the GPU pages plot)."""
import json
import urllib.request

from distributed import get_client

client = get_client()
info = client.scheduler_info(n_workers=-1)
port = info["services"]["dashboard"]


def page(path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=60) as answer:
        return answer.status, answer.read().decode()


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
