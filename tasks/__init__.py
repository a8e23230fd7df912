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

__all__ = [
    "TASKS", "ImageBank", "RecordError", "Task", "build_image_bank", "decode_images", "get_task_class", "images_to_tokens",
    "list_tasks", "register_task", "tokens_to_images", "ClassToImage", "TextToImage", "Captioning", "VQA",
    "TaskMixture", "TaskSpec", "build_batch_source", "build_mixture", "build_tokenizer", "load_bank",
    "ClassToVideo", "build_video_bank", "Conversation",
]
