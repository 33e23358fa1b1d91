"""The `data:` and `model:` sections of an `adding` job (pydantic, no torch)."""

from pydantic import Field, model_validator

from lstm_train.task_api import ModelBase, SequenceData


class AddingData(SequenceData):
    min_length: int = Field(10, ge=2, description="shortest sequence")
    max_length: int = Field(30, ge=2, description="longest sequence")
    train_size: int = Field(10000, ge=1)
    val_size: int = Field(1000, ge=0, description="the validation split (a sweep compares its points on it)")
    test_size: int = Field(1000, ge=1)
    seed: int = Field(0, description="the sequences are drawn from it (test: its own stream)")

    @model_validator(mode="after")
    def _lengths(self) -> "AddingData":
        if self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        return self


class AddingModel(ModelBase):
    pass


Data = AddingData
Model = AddingModel
