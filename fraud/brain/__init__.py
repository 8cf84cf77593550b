"""The fraud brain: its synthetic data set, features, model and gRPC servicer; no Django."""
