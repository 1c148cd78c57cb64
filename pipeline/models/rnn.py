"""Recurrent model: report 003's LSTM, reading the image's 28 rows as a 28-step sequence."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from pipeline import config
from pipeline.models.layers import Standardize, check_dropout, check_int, check_ints, dense_stack


class RowLSTM(nn.Module):
    """Standardize -> LSTM over rows -> last hidden state -> dropout -> dense head."""

    def __init__(self, hidden: int, layers: int, dense: Sequence[int], dropout: float) -> None:
        super().__init__()
        self.standardize = Standardize()
        # nn.LSTM's own dropout acts between stacked layers only (none for one layer)
        self.lstm = nn.LSTM(
            28, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0
        )
        self.dropout = nn.Dropout(dropout)
        hidden_layers, width = dense_stack(dense, hidden, dropout)
        self.head = nn.Sequential(*hidden_layers, nn.Linear(width, config.NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.standardize(x).flatten(1, 2)  # (B, 1, 28, 28) -> (B, 28 steps, 28 pixels)
        out, _ = self.lstm(rows)  # (B, 28, hidden)
        return self.head(self.dropout(out[:, -1]))  # the state after the last row


def build_lstm(
    *,
    dropout: float | None = None,
    hidden: int = 128,
    layers: int = 1,
    dense: Sequence[int] = (64,),
) -> nn.Module:
    """hidden: 128 LSTM units, report 003's. layers: stacked LSTM layers (003 uses 1).
    dense: ReLU layers before the output; 003 names "dense layers with ReLU" without
    sizes, 64 halves the LSTM width (89,802 parameters in all).
    dropout: None = 0.2 after the LSTM and each dense layer (003 gives no rate).
    """
    p = check_dropout("lstm", 0.2 if dropout is None else dropout)
    hidden = check_int("lstm", "hidden", hidden)
    layers = check_int("lstm", "layers", layers)
    dense = check_ints("lstm", "dense", dense, allow_empty=True)
    return RowLSTM(hidden, layers, dense, p)
