"""Train the example face detector: facexlib's RetinaFace (MobileNet-0.25) on toy faces (``training.toy_faces``).

Run from the repository root (minutes on one CPU thread):

    python -m training.train_face_detector --out workflows/assets/facedetection/toy-retinaface-mobile0.25.safetensors
    python -m training.train_face_detector --out /tmp/det.safetensors --smoke     # a short check of the path

Each step draws a batch of 128² pictures, 80 % with one toy face (20 to 64 pixels wide, turned up to ±0.35 rad)
and all with decoy ovals. Training is RetinaFace's multi-task loss on its own anchors (facexlib's ``PriorBox``):
anchors overlapping the face's box by IoU ≥ 0.35 (and the best one) are positives; the box is encoded as
RetinaFace's decoder expects (centre offsets over 0.1 · anchor size, log size over 0.2), and so are the five
landmarks; smooth-L1 on box and landmarks of positives, cross-entropy on positives and the hardest negatives
(7 per positive, at least 16 per picture). The input is what facexlib's ``detect_faces`` feeds the network:
BGR 0..255 minus its channel means. At the end it prints, for held-out pictures, how many faces were found at
facexlib's 0.97 confidence, false detections, and the mean landmark error: the numbers in the model's card.
"""
from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from training.toy_faces import random_picture

SIZE = 128
VARIANCE = (0.1, 0.2)
MEAN_BGR = (104.0, 117.0, 123.0)


@dataclass
class Config:
    seed: int = 0
    threads: int = 1
    steps: int = 1500
    batch: int = 16
    lr: float = 2e-3
    held_out: int = 100


def network_input(pictures: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB [0, 1] → what RetinaFace's detect_faces gives the network."""
    return pictures.flip(1) * 255 - torch.tensor(MEAN_BGR).view(1, 3, 1, 1)


def corners(boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)


def iou(box: torch.Tensor, anchors_xyxy: torch.Tensor) -> torch.Tensor:
    top_left = torch.maximum(box[:2], anchors_xyxy[:, :2])
    bottom_right = torch.minimum(box[2:], anchors_xyxy[:, 2:])
    overlap = (bottom_right - top_left).clamp(min=0).prod(1)
    area = (box[2:] - box[:2]).prod() + (anchors_xyxy[:, 2:] - anchors_xyxy[:, :2]).prod(1)
    return overlap / (area - overlap)


def targets(faces: list, priors: torch.Tensor):
    """Per anchor: label (0/1), encoded box (4) and landmarks (10) for one picture's faces (0 or 1)."""
    labels = torch.zeros(len(priors), dtype=torch.long)
    boxes, landmarks = torch.zeros(len(priors), 4), torch.zeros(len(priors), 10)
    for face in faces:
        box = torch.tensor(face.box, dtype=torch.float32) / SIZE
        overlaps = iou(box, corners(priors))
        positive = overlaps >= 0.35
        positive[overlaps.argmax()] = True
        centre, size = (box[:2] + box[2:]) / 2, box[2:] - box[:2]
        anchor_centre, anchor_size = priors[positive, :2], priors[positive, 2:]
        labels[positive] = 1
        boxes[positive] = torch.cat([(centre - anchor_centre) / (VARIANCE[0] * anchor_size),
                                     torch.log(size / anchor_size) / VARIANCE[1]], 1)
        points = face.landmarks.float() / SIZE  # (5, 2)
        landmarks[positive] = ((points[None] - anchor_centre[:, None]) / (VARIANCE[0] * anchor_size[:, None])).flatten(1)
    return labels, boxes, landmarks


def loss_of(network, pictures, faces, priors):
    loc, logits, landm = network(network_input(pictures))
    encoded = [targets(f, priors) for f in faces]
    labels = torch.stack([e[0] for e in encoded])
    boxes, landmarks = torch.stack([e[1] for e in encoded]), torch.stack([e[2] for e in encoded])
    positive = labels == 1
    n_positive = max(1, int(positive.sum()))
    box_loss = F.smooth_l1_loss(loc[positive], boxes[positive], reduction="sum") / n_positive
    landmark_loss = F.smooth_l1_loss(landm[positive], landmarks[positive], reduction="sum") / n_positive
    class_loss = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    hardness = class_loss.detach().masked_fill(positive, -1.0)
    keep = positive.clone()
    for row in range(len(labels)):
        count = max(16, 7 * int(positive[row].sum()))
        keep[row, hardness[row].topk(count).indices] = True
    return 2.0 * box_loss + class_loss[keep].sum() / n_positive + landmark_loss


def evaluate(path: Path, count: int, seed: int = 1000) -> dict:
    from nodes.faces.detection import detect_faces, load_detector

    detector = load_detector(path, path.name)
    generator = torch.Generator().manual_seed(seed)
    found = missed = false = 0
    errors = []
    for _ in range(count):
        picture, faces = random_picture(SIZE, generator)
        detections = detect_faces(detector, picture.permute(1, 2, 0), confidence=0.97, detect_size=0)
        matched = 0
        for face in faces:  # a detection whose landmarks are within 30 % of the face's width on average
            width = face.box[2] - face.box[0]
            error = min((float((d.landmarks - face.landmarks).norm(dim=1).mean()) / width for d in detections), default=1.0)
            if error < 0.3:
                found, matched = found + 1, matched + 1
                errors.append(error)
            else:
                missed += 1
        false += len(detections) - matched
    return {"faces": found + missed, "found": found, "missed": missed, "false_detections": false,
            "landmark_error_of_face_width": sum(errors) / max(1, len(errors))}


def train(config: Config, out: Path) -> dict:
    from facexlib.detection.retinaface import generate_config
    from facexlib.detection.retinaface_utils import PriorBox

    from nodes.faces.detection import retinaface
    from nodes.faces.tiny import save_state

    torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = retinaface("mobile0.25", phase="train").train()
    priors = PriorBox(generate_config("mobile0.25"), image_size=(SIZE, SIZE)).forward()
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=1e-4)
    start = time.time()
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / config.steps)))
        drawn = [random_picture(SIZE, generator) for _ in range(config.batch)]
        pictures = torch.stack([p for p, _ in drawn])
        loss = loss_of(network, pictures, [f for _, f in drawn], priors)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 100 == 0 or step == config.steps - 1:
            print(f"step {step}: loss {float(loss.detach()):.3f} ({time.time() - start:.0f} s)", flush=True)
    save_state(network.eval().state_dict(), out, torch.float16)
    results = evaluate(out, config.held_out)
    results["minutes"] = round((time.time() - start) / 60, 1)
    print(results)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--smoke", action="store_true", help="30 steps, 10 held-out pictures")
    parser.add_argument("--steps", type=int)
    args = parser.parse_args()
    config = Config(steps=30, held_out=10) if args.smoke else Config()
    if args.steps:
        config.steps = args.steps
    train(config, args.out)
