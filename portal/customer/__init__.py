"""The customer face: pages that customers (and staff previews) see."""
