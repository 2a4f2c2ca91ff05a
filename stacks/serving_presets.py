"""The serving presets (OpenAI-compatible servers spothub knows how to start) and the GPU count of each
instance type: the tables the serving configuration in stacks/config.py is checked and filled against."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from enum import StrEnum


class ServingPreset(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"


# The variable the serving container always gets the model API key in (an ECS container secret).
API_KEY_ENV = "SPOTHUB_API_KEY"
# The longest prompt plus completion the presets serve: it bounds the KV cache that one 24 GB GPU of the
# default types must hold beside the default model's weights (7B parameters in bf16, about 15 GB).
PRESET_MAX_MODEL_LEN = 8192
UNIVERSAL_HOST = "0.0.0.0"  # noqa: S104 (host networking; the security group admits only configured sources)


@dataclass(frozen=True)
class PresetSpec:
    """An OpenAI-compatible server: its pinned image, port, health path, and where else it reads the API key."""

    image: str
    port: int
    health_path: str
    api_key_environment: tuple[str, ...] = ()


PRESETS: dict[ServingPreset, PresetSpec] = {
    # The image's entrypoint is vLLM's OpenAI server: the command is its arguments. vLLM reads VLLM_API_KEY.
    ServingPreset.VLLM: PresetSpec(
        image="vllm/vllm-openai:v0.8.5", port=8000, health_path="/health", api_key_environment=("VLLM_API_KEY",)
    ),
    # No entrypoint: the command starts the server, through a shell that expands the key's variable.
    ServingPreset.SGLANG: PresetSpec(image="lmsysorg/sglang:v0.4.6.post1-cu124", port=30000, health_path="/health"),
}

# Instance types with NVIDIA GPUs that ECS schedules, by GPU count (servingGpus must fit every configured type).
GPU_COUNTS: dict[str, int] = {
    **dict.fromkeys(("g4dn.xlarge", "g4dn.2xlarge", "g4dn.4xlarge", "g4dn.8xlarge", "g4dn.16xlarge"), 1),
    "g4dn.12xlarge": 4,
    "g4dn.metal": 8,
    **dict.fromkeys(("g5.xlarge", "g5.2xlarge", "g5.4xlarge", "g5.8xlarge", "g5.16xlarge"), 1),
    **dict.fromkeys(("g5.12xlarge", "g5.24xlarge"), 4),
    "g5.48xlarge": 8,
    **dict.fromkeys(("g5g.xlarge", "g5g.2xlarge", "g5g.4xlarge", "g5g.8xlarge"), 1),
    **dict.fromkeys(("g5g.16xlarge", "g5g.metal"), 2),
    **dict.fromkeys(("g6.xlarge", "g6.2xlarge", "g6.4xlarge", "g6.8xlarge", "g6.16xlarge"), 1),
    **dict.fromkeys(("g6.12xlarge", "g6.24xlarge"), 4),
    "g6.48xlarge": 8,
    **dict.fromkeys(("g6e.xlarge", "g6e.2xlarge", "g6e.4xlarge", "g6e.8xlarge", "g6e.16xlarge"), 1),
    **dict.fromkeys(("g6e.12xlarge", "g6e.24xlarge"), 4),
    "g6e.48xlarge": 8,
    **dict.fromkeys(("gr6.4xlarge", "gr6.8xlarge"), 1),
    "p3.2xlarge": 1,
    "p3.8xlarge": 4,
    "p3.16xlarge": 8,
    "p3dn.24xlarge": 8,
    "p4d.24xlarge": 8,
    "p4de.24xlarge": 8,
    "p5.4xlarge": 1,
    **dict.fromkeys(("p5.48xlarge", "p5e.48xlarge", "p5en.48xlarge", "p6-b200.48xlarge"), 8),
}


def preset_command(preset: ServingPreset, *, model: str, port: int, gpus: int) -> list[str]:
    """The preset's container command for this model, port and GPU count (the API key stays a variable's name)."""
    if preset is ServingPreset.VLLM:
        parallel = ["--tensor-parallel-size", str(gpus)] if gpus > 1 else []
        return [
            "--model",
            model,
            "--host",
            UNIVERSAL_HOST,
            "--port",
            str(port),
            "--max-model-len",
            str(PRESET_MAX_MODEL_LEN),
            *parallel,
        ]
    parallel = f" --tp {gpus}" if gpus > 1 else ""
    # `exec` leaves the server as the container's main process (it gets ECS's SIGTERM); "$@" passes servingArgs,
    # appended after the script's $0.
    script = (
        f"exec python3 -m sglang.launch_server --model-path {shlex.quote(model)} --host {UNIVERSAL_HOST} "
        f'--port {port}{parallel} --api-key "${API_KEY_ENV}" "$@"'
    )
    return ["sh", "-c", script, "sglang"]
