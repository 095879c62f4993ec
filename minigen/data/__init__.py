"""Built-in data: synthetic Seq2Seq tasks, batching and metrics."""
from .batching import IGNORE_INDEX, Seq2SeqBatches, pad_batch, random_text_batch, split_train_val
from .dates import DATE_FORMATS, format_date
from .metrics import character_error_rate, edit_distance, exact_match, token_accuracy
from .tasks import TASKS, TaskData, load_task

__all__ = [
    "TaskData", "TASKS", "load_task", "DATE_FORMATS", "format_date",
    "pad_batch", "Seq2SeqBatches", "IGNORE_INDEX", "random_text_batch", "split_train_val",
    "exact_match", "token_accuracy", "character_error_rate", "edit_distance",
]
