"""A reward model: a Hugging Face sequence-classification model with one label, given as ``reward.model_path``.

torch and transformers are imported when a :class:`RewardModelScorer` is built, not when this
module is imported, so that the rule-based scorers never pay for them.
"""

from __future__ import annotations

from pathlib import Path


class RewardModelScorer:
    """Scores texts with ``AutoModelForSequenceClassification`` loaded from a local folder.

    The score of a text is the logit of label 0 of a ``num_labels=1`` model, computed in batches of
    ``batch_size`` under ``torch.no_grad`` on the first GPU if there is one, else on the CPU. Texts
    longer than the model's ``max_position_embeddings`` keep their end (the response).
    """

    def __init__(self, path: str | Path, batch_size: int = 8) -> None:
        """Load the model and tokenizer from ``path``; ``FileNotFoundError`` if it is not such a folder,
        ``ValueError`` if the model does not have exactly one label."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(
                f"reward.model_path={str(path)!r}: no Hugging Face model folder there (config.json missing); "
                "set reward.model_path to a local folder with a sequence-classification model and its tokenizer"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(folder).to(self.device).eval()
        if self.model.config.num_labels != 1:
            raise ValueError(
                f"reward.model_path={str(path)!r}: the model has {self.model.config.num_labels} labels; "
                "a reward model has one (num_labels=1), whose logit is the reward"
            )
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.max_length = getattr(self.model.config, "max_position_embeddings", None)

    def score(self, texts: list[str]) -> list[float]:
        """One reward per text, in order."""
        import torch

        scores: list[float] = []
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size],
                    return_tensors="pt",
                    padding=True,
                    truncation=self.max_length is not None,
                    max_length=self.max_length,
                ).to(self.device)
                logits = self.model(**batch).logits
                scores.extend(logits[:, 0].float().tolist())
        return scores
