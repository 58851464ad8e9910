"""What the model looks at: the whole image and, for face-aware models, each face at one canonical framing.

Training, evaluation and the scanner all build views here, so the same image gets the same score
on every path. The image's score is the highest of its views' scores, each first moved by its kind's
logit offset where the model has them (calibrated views: every kind at 0.5 at its own threshold).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from PIL import Image

from scanner.detector.faces import Box, FaceFinder, face_region
from scanner.detector.networks import Forward, predict_in_chunks
from scanner.detector.pages import page_region
from scanner.detector.preprocess import VIEW_KINDS, Decoding, Preprocess, ViewSearch, resize_center_crop, to_tensor

Region = tuple[int, int, int, int]  # left, top, right, bottom in an image's pixels


@dataclass
class ImageViews:
    """Model inputs for one image: row 0 the whole image, then one row per face in `boxes`."""

    tensors: torch.Tensor
    boxes: list[Box] = field(default_factory=list)


@dataclass
class ViewScores:
    """Scores of one image's views, combined into the image's score: the whole image scaled down, the native patch
    (None where there is none) and each face; `boxes` pairs with `faces`."""

    whole: float
    faces: list[float]
    boxes: list[Box] = field(default_factory=list)
    patch: float | None = None

    @property
    def score(self) -> float:
        """The image's score: its most suspicious view."""
        return max([self.whole, *([] if self.patch is None else [self.patch]), *self.faces])


def whole_view(image: Image.Image, config: Preprocess) -> Image.Image:
    """The whole-image view: the classic centre crop for old checkpoints, the image scaled down for new ones."""
    decoding = config.decoding
    max_side = decoding.max_side if not config.search.uses_faces else 0
    return resize_center_crop(image, decoding.size, max_side, decoding.resample)


def patch_view(image: Image.Image, config: Decoding) -> Image.Image:
    """A centre patch at native pixels (the image's shorter side kept up to max_side): no downscaling blur."""
    return resize_center_crop(image, config.size, config.max_side, config.resample)


def face_view(image: Image.Image, box: Box, config: Preprocess, widen: float | None = None) -> Image.Image:
    """One face at the canonical framing: a widened square around the box, scaled to the input size."""
    region = face_region(box, image.width, image.height, widen or config.search.faces.widen)
    crop = image.crop(region)
    side = config.decoding.size
    return crop.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)


def find_faces(image: Image.Image, config: ViewSearch, finder: FaceFinder | None) -> list[Box]:
    """Face boxes for a face-aware model; none for whole-image models."""
    return finder.find(image) if config.uses_faces and finder is not None else []


def has_patch(image: Image.Image, config: ViewSearch) -> bool:
    """Whether the model scores a native patch of this image: a faces+patch model does when the image's shorter
    side exceeds `patch_min_side` (below it the patch shows little the scaled whole image does not)."""
    return config.image_views == 2 and min(image.size) > config.patch_min_side


def crop_region(width: int, height: int, size: int, max_side: int = 0) -> Region:
    """The region of a `width` x `height` image that `resize_center_crop` keeps (in the image's pixels)."""
    shorter = min(width, height)
    scale = min(max(shorter, size), max(size, max_side)) / shorter
    side = min(size / scale, width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return round(left), round(top), round(left + side), round(top + side)


@dataclass(frozen=True)
class View:
    """One view the model scores: its kind (VIEW_KINDS), what the network sees, the region of the image it shows,
    and for a face its box."""

    kind: str
    image: Image.Image
    region: Region
    box: Box | None = None


def cut_views(image: Image.Image, config: Preprocess, boxes: list[Box]) -> list[View]:
    """The views scored: the whole image, any native patch, then each face (the order of an image's rows)."""
    width, height, decoding = image.width, image.height, config.decoding
    whole_side = decoding.max_side if not config.search.uses_faces else 0
    views = [View("whole", whole_view(image, config), crop_region(width, height, decoding.size, whole_side))]
    if has_patch(image, config.search):
        region = crop_region(width, height, decoding.size, decoding.max_side)
        views.append(View("patch", patch_view(image, decoding), region))
    for box in boxes:
        region = face_region(box, width, height, config.search.faces.widen)
        views.append(View("face", face_view(image, box, config), region, box))
    return views


def absent_view(config: Decoding) -> torch.Tensor:
    """The placeholder row of a view kind an image does not have (a small image's native patch): all NaN, so
    `predict_in_chunks` skips it without a network pass and its score, NaN, is left out of every maximum."""
    return torch.full((3, config.size, config.size), math.nan)


# The turns a checkpoint may search (`Preprocess.turns`): a quarter turn each way, a photo whose orientation was lost,
# and the half turn, an upside-down fake (v7 searched only the quarter turns and caught 1.2% of upside-down GAN faces).
TURNS = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


@dataclass(frozen=True)
class Placement:
    """How the part the model scores was cut from the image: the photo inside a page (`region`, None for the
    whole image), then turned by `turn` degrees counter-clockwise (90, 180 or 270) to set its faces upright (0: as it
    is)."""

    region: tuple[int, int, int, int] | None = None
    turn: int = 0

    def apply(self, image: Image.Image) -> Image.Image:
        """The part of `image` this placement describes."""
        part = image.crop(self.region) if self.region else image
        return part.transpose(TURNS[self.turn]) if self.turn else part

    def to_image(self, box: Box, part_size: tuple[int, int]) -> Box:
        """A box in the turned part (of size `part_size`) -> the same box in the image's pixels."""
        width, height = part_size[::-1] if self.turn in (90, 270) else part_size  # the part before it was turned
        x, y, w, h = box.x, box.y, box.w, box.h
        if self.turn == 180:
            x, y = width - box.x - box.w, height - box.y - box.h
        elif self.turn == 90:  # counter-clockwise: the part's (u, v) was the cut's (width - v, u)
            x, y, w, h = width - box.y - box.h, box.x, box.h, box.w
        elif self.turn == 270:
            x, y, w, h = box.y, height - box.x - box.w, box.h, box.w
        left, top = self.region[:2] if self.region else (0, 0)
        return Box(x + left, y + top, w, h)


def scored_part(
    image: Image.Image, config: ViewSearch, finder: FaceFinder | None = None, known: list[Box] | None = None
) -> tuple[Image.Image, list[Box], Placement]:
    """The part of the image the views come from, its face boxes, and how it was cut: the photo inside a flat page
    (screenshots, letterboxes, padded reposts) for models that trim pages; for models that turn faces, an image
    with no upright face but a face at one of the checkpoint's turns is turned to set that face upright, and for
    models with a half-turn check, an image whose upright face is weak and upside-down face surer is turned over.
    `known`: the upright boxes found on this image before, used unless a photo is cut out of it or the model checks
    the half turn (which needs the search's confidence)."""
    region = page_region(image, config.page) if config.page is not None else None
    part = image.crop(region) if region else image
    if config.half_turn is not None and config.uses_faces and finder is not None:
        turn, boxes = finder.find_checked(part, config.half_turn)
        if turn:
            return part.transpose(TURNS[turn]), boxes, Placement(region, turn)
    elif known is not None and region is None:
        boxes = known
    else:
        boxes = find_faces(part, config, finder)
    if not boxes and config.turns and config.uses_faces and finder is not None:
        if turned := finder.find_turned(part, config.turns):  # only the turn chosen is made of the image
            turn, turned_boxes = turned
            return part.transpose(TURNS[turn]), turned_boxes, Placement(region, turn)
    return part, boxes, Placement(region)


def make_views(
    image: Image.Image, config: Preprocess, finder: FaceFinder | None, known: list[Box] | None = None
) -> ImageViews:
    """Decoded RGB image -> the stacked model inputs and the face boxes they came from (in `image`'s pixels);
    `known`: the upright boxes found on this image before (see `scored_part`)."""
    part, boxes, placement = scored_part(image, config.search, finder, known)
    views = views_from_boxes(part, config, boxes)
    views.boxes = [placement.to_image(box, part.size) for box in boxes]
    return views


def views_from_boxes(image: Image.Image, config: Preprocess, boxes: list[Box]) -> ImageViews:
    """The stacked model inputs of an image whose face boxes are already known."""
    return ImageViews(view_rows(cut_views(image, config, boxes), config), boxes)


def view_rows(views: list[View], config: Preprocess) -> torch.Tensor:
    """An image's cut views as the model's stacked rows: a placeholder row where a patch model's patch is absent."""
    rows = [to_tensor(view.image, config.decoding) for view in views]
    if config.search.image_views == 2 and not any(view.kind == "patch" for view in views):
        rows.insert(1, absent_view(config.decoding))  # every image keeps the layout whole, patch, faces
    return torch.stack(rows)


def view_kinds(count: int, image_views: int) -> list[str]:
    """The kind (from VIEW_KINDS) of each of an image's `count` views: the whole image, the native patch where the
    model scores one (a placeholder row where the image is too small for it), then faces. The one place that reads
    the rows' order."""
    return list(VIEW_KINDS[:image_views][:count]) + ["face"] * max(0, count - image_views)


def mirror_mask(counts: Sequence[int], preprocess: Preprocess) -> torch.Tensor | None:
    """Which of the flat views (images of `counts` views each) the model also scores as their mirror image;
    None when it mirrors none."""
    if not preprocess.scoring.mirror:
        return None
    kinds = [kind for count in counts for kind in view_kinds(count, preprocess.search.image_views)]
    return torch.tensor([kind in preprocess.scoring.mirror for kind in kinds], dtype=torch.bool)


def in_mirror_band(plain: Sequence[float], counts: Sequence[int], preprocess: Preprocess) -> torch.Tensor:
    """Which of the flat views score, unmirrored and calibrated, inside the checkpoint's mirror band (absent: no)."""
    low, high = preprocess.scoring.mirror_band
    kinds = [kind for count in counts for kind in view_kinds(count, preprocess.search.image_views)]
    offset = preprocess.scoring.offset
    inside = [not math.isnan(s) and low <= logit(s) - offset(k) <= high for s, k in zip(plain, kinds)]
    return torch.tensor(inside, dtype=torch.bool)


def band_around(threshold: float, margin: float) -> tuple[float, float]:
    """The mirror band of `margin` logits either side of the image threshold's logit."""
    middle = logit(threshold)
    return middle - margin, middle + margin


def score_flat_views(
    forward: Forward, views: torch.Tensor, counts: Sequence[int], preprocess: Preprocess, step: int,
    device: torch.device,
) -> list[float]:  # fmt: skip
    """Every view's raw score as the checkpoint says to score it, for training, evaluation and the scanner alike:
    views of a mirrored kind averaged (logits) with their mirror image, in the same network call; with a mirror
    band, all views are scored plain first and only those inside the band are scored mirrored too."""
    mirror = mirror_mask(counts, preprocess)
    if mirror is None or not preprocess.scoring.mirror_band:
        return predict_in_chunks(forward, views, mirror, step, device)
    plain = predict_in_chunks(forward, views, None, step, device)
    rows = (mirror & in_mirror_band(plain, counts, preprocess)).nonzero().flatten().tolist()
    for row, score in zip(rows, predict_in_chunks(forward, views[rows].flip(-1), None, step, device)):
        plain[row] = 1 / (1 + math.exp(-(logit(plain[row]) + logit(score)) / 2))
    return plain


def logit(score: float) -> float:
    """A score's logit, the score first clipped to [1e-7, 1 - 1e-7]."""
    clipped = min(max(score, 1e-7), 1 - 1e-7)
    return math.log(clipped / (1 - clipped))


def calibrated(score: float, offset: float) -> float:
    """A view score moved by `offset` in logit space: 0.5 where the view reaches its own threshold."""
    return score if not offset else 1 / (1 + math.exp(offset - logit(score)))


def combine_views(
    chunk: Sequence[float], image_views: int = 1, offsets: Mapping[str, float] | None = None
) -> ViewScores:  # fmt: skip
    """One image's raw view scores -> its ViewScores, each view first calibrated by its kind's offset (if any)."""
    kinds = view_kinds(len(chunk), image_views)
    scores = [calibrated(s, (offsets or {}).get(kind, 0.0)) for s, kind in zip(chunk, kinds)]
    of_kind = {kind: [s for s, k in zip(scores, kinds) if k == kind and not math.isnan(s)] for kind in VIEW_KINDS}
    patch = of_kind["patch"][0] if of_kind["patch"] else None  # an absent patch scores NaN
    return ViewScores(whole=of_kind["whole"][0], faces=of_kind["face"], patch=patch)


def chunk_views(flat_scores: list[float], counts: Sequence[int]) -> list[list[float]]:
    """Regroup a flat list of view scores into one list per image, `counts` views each."""
    return [flat_scores[end - count : end] for end, count in zip(itertools.accumulate(counts), counts)]


def split_scores(
    flat_scores: list[float], counts: list[int], image_views: int = 1, offsets: Mapping[str, float] | None = None
) -> list[ViewScores]:
    """Regroup a flat list of view scores into one ViewScores per image."""
    return [combine_views(chunk, image_views, offsets) for chunk in chunk_views(flat_scores, counts)]
