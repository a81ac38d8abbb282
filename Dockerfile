# One image for the API, the workers and the one-shot migration; the command picks the role.
# GPU hosts: build with --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 (same pinned torch).
FROM python:3.11-slim AS base

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LUMEN_DATA_DIR=/var/lib/lumen \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 lumen \
 && mkdir -p /var/lib/lumen && chown lumen /var/lib/lumen

WORKDIR /srv/lumen
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY workers ./workers
COPY models ./models
COPY migrations ./migrations
COPY demo ./demo
# The demo reader study reads RetinaMNIST test photographs (CC BY 4.0, see data/DATA_LICENSES.md).
COPY data/retinamnist.npz data/DATA_LICENSES.md ./data/
RUN pip install --extra-index-url "$TORCH_INDEX" "torch==2.13.0" \
 && pip install -e .

USER lumen
EXPOSE 8000
CMD ["lumen", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
