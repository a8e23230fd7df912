"""Task heads (`unimodal.tasks`): class→image, text→image, captioning, VQA, conversation and their mixture."""

from .base import (
    TASKS,
    ImageBank,
    RecordError,
    Task,
    build_image_bank,
    decode_images,
    get_task_class,
    images_to_tokens,
    list_tasks,
    register_task,
    tokens_to_images,
)
from .conversation import Conversation
from .generation import ClassToImage, TextToImage
from .mixture import (
    TaskMixture,
    TaskSpec,
    build_batch_source,
    build_mixture,
    build_tokenizer,
    load_bank,
)
from .understanding import VQA, Captioning
from .video import ClassToVideo, build_video_bank


class _TaskDataSide:
    """The trainer's data side (`unimodal.train.data_side.DataSide`): task mixtures over registered datasets."""

    def build_tokenizer(self, cfg):  # noqa: ANN001, ANN201 - the protocol documents the types
        return build_tokenizer(cfg)

    def build_source(self, cfg, model_cfg, visual, tokenizer):  # noqa: ANN001, ANN201
        return build_batch_source(cfg, model_cfg, visual, tokenizer)

    def sample_hook(self, source, out, schedule):  # noqa: ANN001, ANN201
        from .progress import ProgressSamples

        return ProgressSamples(source, out, schedule) if isinstance(source, TaskMixture) else None


DATA_SIDE = _TaskDataSide()

__all__ = [
    "TASKS", "ImageBank", "RecordError", "Task", "build_image_bank", "decode_images", "get_task_class", "images_to_tokens",
    "list_tasks", "register_task", "tokens_to_images", "ClassToImage", "TextToImage", "Captioning", "VQA",
    "TaskMixture", "TaskSpec", "build_batch_source", "build_mixture", "build_tokenizer", "load_bank",
    "ClassToVideo", "build_video_bank", "Conversation", "DATA_SIDE",
]
