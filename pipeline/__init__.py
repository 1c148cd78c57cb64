"""fashion-mnist-bench: a Fashion-MNIST benchmark pipeline tracked in MLflow and tuned with Optuna."""

__version__ = "0.2.0"
