"""The model and inference: pure torch modules and the recommender facade (headless)."""
