"""PyTorch trainers. They read warehouse tables through ``features`` contracts and never Spark."""
