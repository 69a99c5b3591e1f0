"""Text side: class vocabularies with synonyms, prompt templates, cached text embeddings."""

from vocaseg.text.vocab import Vocabulary

__all__ = ["Vocabulary"]
