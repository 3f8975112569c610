"""Built-in dataset plugins; each module documents its folder layout."""
