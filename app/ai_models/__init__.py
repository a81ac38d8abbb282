"""The models Lumen serves: model folders (card + weights) kept in step with the `ai_models` rows."""
