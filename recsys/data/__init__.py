"""Data layer: load and validate logs and catalogues, split them by time, encode them for models."""

from recsys.data.dataset import Dataset, load_dataset
from recsys.data.images import ImageStore
from recsys.data.interactions import IdIndex, TrainingData
from recsys.data.report import DataValidationError, ValidationIssue, ValidationReport
from recsys.data.split import TimeSplit, ground_truth, split_by_time

__all__ = [
    "DataValidationError",
    "Dataset",
    "IdIndex",
    "ImageStore",
    "TimeSplit",
    "TrainingData",
    "ValidationIssue",
    "ValidationReport",
    "ground_truth",
    "load_dataset",
    "split_by_time",
]
