"""Every registered encoder trains a step on 5-frame clips at 112 and 224 px, under every freezing policy.

CPU-sized: each architecture's ``tiny`` variant (the same block types, clip adaptations and
heads, narrower and shallower); ``s3d``'s 5-frame adaptation is also checked on the real net.
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from trainer.models.backbone import pad_frames
from trainer.models.encoder_registry import ENCODERS, build_backbone
from trainer.models.hub_backbones import slowfast_pathways, videomae_clip
from trainer.models.video_item_encoder import VideoItemEncoder, apply_freezing

FRAMES = 5


def _train_step(name: str, size: int, policy: str, variant: str = "tiny") -> None:
    torch.manual_seed(0)
    backbone = build_backbone(name, num_frames=FRAMES, frame_size=size, variant=variant)
    apply_freezing(backbone, policy, trainable_blocks=1)
    encoder = VideoItemEncoder(backbone, dim=8).train()
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    buffers = {n: b.clone() for n, b in encoder.backbone.named_buffers() if "running_mean" in n}
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=1e-2)
    clips = torch.randint(0, 256, (2, FRAMES, 3, size, size), dtype=torch.uint8)

    embeddings = encoder(torch.tensor([1, 2]), clips)
    assert embeddings.shape == (2, 8) and torch.isfinite(embeddings).all()
    embeddings.square().sum().backward()
    optimizer.step()

    moved = {n for n, p in encoder.named_parameters() if not torch.equal(p, before[n])}
    top = f"backbone.{backbone.block_names[-1]}."
    assert "projection.weight" in moved
    if policy == "frozen":
        assert moved <= {"projection.weight", "projection.bias"}
    else:
        assert any(n.startswith(top) for n in moved), f"{name}: the top block did not train"
    if policy == "all":
        assert any(not n.startswith(("projection.", top)) for n in moved), (
            f"{name}: lower blocks did not train"
        )
    assert moved <= trainable  # frozen parameters never move
    if policy != "all":  # frozen blocks run in eval mode: their normalisation statistics stay as loaded
        frozen = [n for n in buffers if not any(n.startswith(b + ".") for b in backbone.block_names[-1:])]
        assert all(torch.equal(encoder.backbone.get_buffer(n), buffers[n]) for n in frozen)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_trains_a_step_on_five_frames(name):
    for size in (112, 224):
        for policy in ("frozen", "top-k", "all"):
            _train_step(name, size, policy)


def test_s3d_trains_on_five_frames_at_full_size():
    # torch 2.14.1's oneDNN weight gradient of the first temporal conv corrupts the heap on 5 frames
    _train_step("s3d", 112, "all", variant="full")


def test_clip_adaptations():
    clips = torch.arange(FRAMES).float().view(1, 1, FRAMES, 1, 1).expand(2, 3, FRAMES, 4, 4)
    slow, fast = slowfast_pathways(clips)
    assert slow[0, 0, :, 0, 0].tolist() == [0, 4] and torch.equal(fast, clips)
    assert pad_frames(clips, 2)[0, 0, :, 0, 0].tolist() == [0, 1, 2, 3, 4, 4]
    assert videomae_clip(clips, 2).shape == (2, 6, 3, 4, 4)
    mvit = build_backbone("mvit_v2_s", variant="tiny", num_frames=16, frame_size=4)
    resampled = mvit.prepare(clips)  # only a clip of other frames than the spec's is resampled
    assert resampled.shape == (2, 3, 16, 4, 4)
    assert resampled[0, 0, :, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


@pytest.mark.parametrize("frames, size, grid", [(5, 112, (3, 28, 28)), (16, 224, (8, 56, 56))])
def test_mvit_runs_on_the_clip_as_it_comes(frames, size, grid):
    """Issue 23 item 15: 5 frames at 112 px were resampled to 16 x 224 (10.7x the tokens: 24 GB of RSS
    for a 2-user batch). The token grid is the clip's; the relative position tables keep the
    pretrained shapes (torchvision interpolates them to the grid)."""
    mvit = build_backbone("mvit_v2_s", num_frames=frames, frame_size=size)
    clips = torch.zeros(1, 3, frames, size, size)
    assert mvit.prepare(clips) is clips
    grid_seen = []
    mvit.module.blocks[0].register_forward_hook(lambda module, args, out: grid_seen.append(out[1]))
    with torch.no_grad():
        assert mvit.module(clips).shape == (1, mvit.feature_dim)
    assert tuple(grid_seen[0]) == grid
    pretrained = torchvision.models.video.mvit_v2_s(weights=None).state_dict()
    assert {k: v.shape for k, v in mvit.module.state_dict().items() if "rel_pos" in k} == {
        k: v.shape for k, v in pretrained.items() if "rel_pos" in k
    }
