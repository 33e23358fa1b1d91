"""Each task's job sections (`data:`, `model:`) as torch-free modules: `Data` and `Model`."""
