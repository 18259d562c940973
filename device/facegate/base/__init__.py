"""The ground floor: file and image helpers every area may use, importing nothing of facegate but errors."""
