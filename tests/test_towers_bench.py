"""benchmarks.towers counts MACs as the formula says (the table's MMACs column rests on it)."""

from __future__ import annotations

import torch
from torch import nn

from benchmarks.towers import count_macs


def test_count_macs_of_a_conv_a_depthwise_conv_and_a_linear():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.Conv2d(8, 8, 5, padding=2, groups=8),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.zeros(1, 3, 16, 16)
    conv = 8 * 8 * 8 * 3 * 9  # (8, 8, 8) outputs x 3 input channels x 3x3
    depthwise = 8 * 8 * 8 * 1 * 25  # one input channel per group, 5x5
    linear = 4 * 8
    assert count_macs(net, x) == conv + depthwise + linear
    assert count_macs(net, x) == conv + depthwise + linear  # hooks removed: no double count
