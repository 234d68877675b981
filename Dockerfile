# syntax=docker/dockerfile:1
# The image every Ray pod of k8s/ runs (head, CPU workers, GPU workers and the RayJob submitter):
# the official Ray GPU image plus this package with its `gpu` extra (flash-attn).
#
#   docker build -t REGISTRY/internvl-batch:0.1.0 .                               # flash-attn built or fetched by pip
#   docker build --build-arg FLASH_ATTN_WHEEL=https://.../flash_attn-...whl -t ... .  # a prebuilt wheel (fastest)
#   docker build --build-arg WITH_FLASH_ATTN=0 -t ... .                           # no flash-attn: the job uses SDPA
#
# k8s/README.md explains the flash-attn choices and the rest of the deployment.

# Ray in the image must equal `rayVersion` in every manifest of k8s/ (tests/unit/test_k8s.py checks it): the
# operator builds its commands from rayVersion, and a client/cluster version mismatch breaks `ray job submit`.
ARG RAY_VERSION=2.60.0
# `-gpu` is Ray's alias for its default CUDA build of that release; pin an explicit `-cuXYZ` tag (or a digest)
# when nodes need a specific CUDA version or builds must be reproducible.
ARG RAY_IMAGE_SUFFIX=py311-gpu
FROM rayproject/ray:${RAY_VERSION}-${RAY_IMAGE_SUFFIX}

ARG RAY_VERSION
# torch and its CUDA build, pinned: the package asks for torch>=2.6, and an unpinned install takes PyPI's newest
# CUDA build, which may need a newer NVIDIA driver than the nodes have and for which flash-attn may have no
# prebuilt wheel. torch 2.8.0+cu128 needs an NVIDIA driver >= 570 (CUDA 12.8; older 525+ drivers run it
# through CUDA's minor-version compatibility, without PTX JIT), and flash-attn 2.8.x publishes prebuilt wheels
# for it (Python 3.11, cxx11 ABI). Change both together, e.g. TORCH_VERSION=2.7.1 TORCH_CUDA=cu126 for older
# drivers (>= 560, or 525+ through compatibility).
ARG TORCH_VERSION=2.8.0
ARG TORCH_CUDA=cu128
# 1: install the `gpu` extra (flash-attn). 0: skip it; attn_implementation=auto then falls back to SDPA, which
# is slower on long prompts but gives the same captions within numerical noise.
ARG WITH_FLASH_ATTN=1
# A flash-attn wheel built for this image's torch / CUDA / Python 3.11 / C++ ABI (URL or path). Without one,
# pip asks flash-attn's setup.py, which downloads a matching prebuilt wheel when one exists and otherwise
# compiles from source: that needs nvcc in the base image, a lot of memory and an hour or more.
ARG FLASH_ATTN_WHEEL=
# Parallel compile jobs when flash-attn compiles from source (each needs several GB of RAM).
ARG MAX_JOBS=4
# Not dependencies of the package, but wanted in the image: decord, the reference's video decoder, for
# `video.decoder: decord` (the default, `auto`, is PyAV, a dependency, with the same frame numbering). decord
# has x86_64 wheels only: pass EXTRA_PIP_PACKAGES= on arm64.
ARG EXTRA_PIP_PACKAGES="decord>=0.6"

# The repository lives here and this is the working directory of every Ray process: RayJob entrypoints
# (`python jobs/caption.py --config configs/...`) run on the head in this directory. k8s/ manifests set
# the same `workingDir` on their containers.
WORKDIR /home/ray/internvl-batch

# PyTorch's CUDA allocator grows segments instead of caching fixed blocks: batches of varying shapes otherwise
# fragment the cache into out-of-memory errors with memory free. (The job also sets this for its replicas
# unless the job's environment sets PYTORCH_CUDA_ALLOC_CONF or PYTORCH_ALLOC_CONF itself.)
ENV PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True

# Dependencies first, from the project metadata only, so that editing code does not reinstall torch.
# The stub package is replaced by the real one below. Ray is pinned so pip never swaps the base image's Ray.
COPY --chown=ray:users pyproject.toml README.md ./
RUN mkdir -p internvl_batch && touch internvl_batch/__init__.py \
 && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH_CUDA}" \
 && pip install --no-cache-dir . "torch==${TORCH_VERSION}" "ray[default,data]==${RAY_VERSION}" ${EXTRA_PIP_PACKAGES} \
 && pip uninstall -y internvl-batch \
 && rm -rf internvl_batch build *.egg-info

# flash-attn needs torch importable at build time, hence --no-build-isolation (torch is installed above).
RUN if [ "${WITH_FLASH_ATTN}" = "1" ]; then \
        if [ -n "${FLASH_ATTN_WHEEL}" ]; then pip install --no-cache-dir "${FLASH_ATTN_WHEEL}"; fi \
     && MAX_JOBS=${MAX_JOBS} pip install --no-cache-dir --no-build-isolation "flash-attn>=2.6" \
     && python -c "import flash_attn"; \
    fi

# The whole repository (see .dockerignore): the package, jobs/caption.py and configs/ at the paths the
# manifests' entrypoints use.
COPY --chown=ray:users . /home/ray/internvl-batch
# The package itself, with its `gpu` extra when flash-attn is wanted (already installed above, so pip only
# checks it); every other dependency is already satisfied.
RUN if [ "${WITH_FLASH_ATTN}" = "1" ]; then EXTRA="[gpu]"; else EXTRA=""; fi \
 && pip install --no-cache-dir ".${EXTRA}" "torch==${TORCH_VERSION}" "ray[default,data]==${RAY_VERSION}" \
 && python -c "import ray, torch, internvl_batch.job; assert ray.__version__ == '${RAY_VERSION}', ray.__version__; \
assert torch.__version__ == '${TORCH_VERSION}+${TORCH_CUDA}', torch.__version__" \
 && test -f jobs/caption.py && test -d configs
