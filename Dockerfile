# nemo-neko in the NeMo container: the package on top of a pinned NeMo Framework release, keeping
# the container's own CUDA builds of torch, Transformer Engine and the rest (never reinstalled).
#
#   docker build -t nemo-neko:0.1 .
#   docker run --rm --gpus all --ipc=host --ulimit memlock=-1 --ulimit stack=67108864 \
#       -v "$PWD/runs:/opt/nemo-neko/runs" nemo-neko:0.1              # the embedded default
#   docker run ... nemo-neko:0.1 python launch/run.py model=8x2b data.tokenizer.path=...
#   enroot import -o nemo-neko.sqsh dockerd://nemo-neko:0.1            # an image for Pyxis
#
# On Slurm: python launch/run.py cluster=slurm cluster.container_image=$PWD/nemo-neko.sqsh ...
FROM nvcr.io/nvidia/nemo:25.11

WORKDIR /opt/nemo-neko
COPY pyproject.toml README.md ./
COPY nemo_neko ./nemo_neko
COPY conf ./conf
COPY launch ./launch

# Constrain pip to the versions the container ships for its GPU stack, so that installing
# nemo-neko's dependencies adds the missing pure-Python ones and replaces none of those.
RUN pip list --format=freeze \
        | grep -iE '^(torch|torchvision|torchaudio|triton|transformer[-_]engine[-_a-z0-9]*|apex|flash[-_]attn|nvidia-[-_a-z0-9]+)==' \
        > /opt/container-pins.txt \
    && pip install --no-cache-dir -c /opt/container-pins.txt -e . \
    && python -c "import torch, megatron.core, nemo_neko.launch; \
print('torch', torch.__version__, 'megatron-core', megatron.core.__version__)"

CMD ["python", "launch/run.py"]
