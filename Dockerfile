# nemo-neko in the NeMo container: the package on top of a pinned NeMo Framework release, keeping
# the container's own CUDA builds of torch, Transformer Engine and the rest (never reinstalled).
# The package is installed as a wheel would be (non-editable; its configs ship inside it), and
# the sources are removed afterwards, so the image runs the installed package.
#
#   docker build -t nemo-neko:0.1 .
#   docker run --rm --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
#       -v "$PWD/runs:/workspace/neko/runs" nemo-neko:0.1              # the embedded default
#   docker run ... nemo-neko:0.1 python -m nemo_neko.launch model=8x2b data.tokenizer.path=...
#   enroot import -o nemo-neko.sqsh dockerd://nemo-neko:0.1              # an image for Pyxis
#
# On Slurm: python launch/run.py cluster=slurm cluster.container_image=$PWD/nemo-neko.sqsh ...
FROM nvcr.io/nvidia/nemo:25.11

COPY pyproject.toml README.md /tmp/nemo-neko/
COPY nemo_neko /tmp/nemo-neko/nemo_neko

# Constrain pip to the versions the container ships for its GPU stack, so that installing
# nemo-neko's dependencies adds the missing pure-Python ones and replaces none of those.
RUN pip list --format=freeze \
        | grep -iE '^(torch|torchvision|torchaudio|triton|transformer[-_]engine[-_a-z0-9]*|apex|flash[-_]attn|nvidia-[-_a-z0-9]+)==' \
        > /opt/container-pins.txt \
    && pip install --no-cache-dir -c /opt/container-pins.txt /tmp/nemo-neko \
    && rm -rf /tmp/nemo-neko \
    && cd / && python -c "import torch, megatron.core, nemo_neko.launch; \
print('torch', torch.__version__, 'megatron-core', megatron.core.__version__)"

WORKDIR /workspace/neko
CMD ["python", "-m", "nemo_neko.launch"]
