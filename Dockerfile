# syntax=docker/dockerfile:1
# Lumen's images, one target per role (docs/deployment.md):
#   api         the web app, also `lumen migrate` and `lumen load-demo`: no torch (app/ never imports it)
#   worker-cpu  a Celery worker with torch's CPU build
#   worker-gpu  a Celery worker with torch's CUDA build
# A worker target installs torch==2.13.0 first, from the index that has its build, then the project with the
# `worker` extra, whose pin (torch==2.13.0) the build already installed satisfies. Each target checks at build time
# that it got what it should (no torch; a CPU build; a CUDA build).
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LUMEN_DATA_DIR=/var/lib/lumen

# Without apt packages: the wheels bring their native libraries (torch's CPU wheel carries its own libgomp).
RUN useradd --create-home --uid 1000 --user-group lumen \
 && mkdir -p /var/lib/lumen \
 && chown lumen:lumen /var/lib/lumen
WORKDIR /srv/lumen
# Sources and licences of the shipped data: the model weights (in every image) and the demo files (in api).
COPY DATA_LICENSES.md ./


# What `pip install .` needs, in one place for every target. Not tests, docs, bench or data: see .dockerignore.
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY app /src/app
COPY workers /src/workers
COPY models /src/models
COPY migrations /src/migrations


FROM base AS api
# Built from a read-write bind mount of the source: the code lives only in site-packages, in no layer twice.
RUN --mount=type=bind,from=source,source=/src,target=/tmp/lumen,rw \
    pip install /tmp/lumen \
 && python -c "import importlib.util, sys; sys.exit('torch in the api image' if importlib.util.find_spec('torch') else 0)"
# `lumen load-demo` reads these from the working directory: they are not part of the installed package.
# RetinaMNIST test photographs (CC BY 4.0) and NIH ChestX-ray14 test radiographs: see data/DATA_LICENSES.md.
COPY demo ./demo
COPY data/retinamnist.npz data/DATA_LICENSES.md ./data/
COPY data/nih_cxr14_demo ./data/nih_cxr14_demo
# lumen, by number: Kubernetes' runAsNonRoot can only verify a numeric user.
USER 1000:1000
EXPOSE 8000
# Liveness only; docker-compose.yml asks /readyz (database and broker) instead. The slim image has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
CMD ["lumen", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker", "--workers", "2"]


FROM base AS worker-cpu
# The CPU build (2.13.0+cpu, no CUDA packages) from PyTorch's CPU index, which also serves torch's dependencies.
# Not checked from where this was written (download.pytorch.org unreachable); the build fails if it lacks it.
# torchvision (timm's, for the timm networks users bring: docs/onboarding.md) from the same index: PyPI's links CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install --index-url https://download.pytorch.org/whl/cpu torchvision==0.28.0
RUN --mount=type=bind,from=source,source=/src,target=/tmp/lumen,rw \
    pip install "/tmp/lumen[worker,monai,timm]" \
 && python -c "import sys, torch; sys.exit(f'not a CPU build: CUDA {torch.version.cuda}' if torch.version.cuda else 0)"
USER 1000:1000
# This host's worker (celery@HOSTNAME) answers a ping over the broker. A worker started with --name needs
# `lumen worker-ping --name` with the same name.
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
    CMD ["lumen", "worker-ping", "--timeout", "10"]
CMD ["lumen", "worker", "--queues", "cpu", "--concurrency", "2"]


FROM base AS worker-gpu
# The CUDA build. The PyPI wheel of torch 2.13.0 for Linux x86_64 is itself the CUDA build: its metadata (read
# with pip's resolver from PyPI) requires cuda-toolkit[cublas,cudart,cufft,...]==13.0.3, cuda-bindings>=13.0.3,<14,
# nvidia-cudnn-cu13==9.20.0.48, nvidia-nccl-cu13==2.29.7, nvidia-cusparselt-cu13, nvidia-nvshmem-cu13 and
# triton==3.7.1, i.e. CUDA 13.0, which needs an NVIDIA driver of the R580 series or newer on the host.
# download.pytorch.org was not reachable from where this was written, so whether it has other CUDA builds of
# 2.13.0 (cu126, cu128, ...) for older drivers is not confirmed; issue 11 found none on the cu124 index.
RUN pip install torch==2.13.0
# monai and timm: the networks of MONAI bundles and timm state dicts users bring (docs/onboarding.md).
RUN --mount=type=bind,from=source,source=/src,target=/tmp/lumen,rw \
    pip install "/tmp/lumen[worker,monai,timm]" \
 && python -c "import sys, torch; sys.exit(0 if (torch.version.cuda or '').startswith('13.') else 'not CUDA 13')"
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 1000:1000
HEALTHCHECK --interval=60s --timeout=20s --start-period=60s --retries=3 \
    CMD ["lumen", "worker-ping", "--timeout", "10"]
CMD ["lumen", "worker", "--queues", "gpu", "--concurrency", "1"]
