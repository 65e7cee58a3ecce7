"""Image-text retrieval recall@k in both directions, with several captions per image."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from vlp._checks import check_finite, check_matrix, check_same_device
from vlp.eval._common import check_index, check_ks, check_scores

__all__ = ["retrieval_recall", "similarity_matrix"]


def similarity_matrix(
    image_embeddings: torch.Tensor, text_embeddings: torch.Tensor
) -> torch.Tensor:
    """Cosine similarities between every image and every text.

    Reference: the zero-shot and retrieval protocol of CLIP (Radford et al., 2021).

    Args:
        image_embeddings: ``(I, D)`` floating.
        text_embeddings: ``(T, D)`` floating, same ``D``.

    Returns:
        ``(I, T)`` similarities in ``[-1, 1]``, in the embeddings' dtype.

    Raises:
        ValueError: on non-2-D or empty input or different ``D``.
        TypeError: on non-floating input.
    """
    check_matrix("image_embeddings", image_embeddings)
    check_matrix("text_embeddings", text_embeddings)
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(
            "image_embeddings and text_embeddings must have the same D, got "
            f"{image_embeddings.shape[1]} and {text_embeddings.shape[1]}"
        )
    check_same_device(("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings))
    if image_embeddings.device.type == "cpu" and not torch.compiler.is_compiling():
        check_finite("image_embeddings", image_embeddings)
        check_finite("text_embeddings", text_embeddings)
    dtype = torch.promote_types(image_embeddings.dtype, text_embeddings.dtype)
    image, text = image_embeddings.to(dtype), text_embeddings.to(dtype)
    return F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


@torch.no_grad()
def retrieval_recall(
    similarity: torch.Tensor,
    caption_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Recall@k for image-to-text and text-to-image retrieval (as in CLIP's Flickr/COCO tables).

    Image ``i`` owns the captions ``t`` with ``caption_to_image[t] == i`` (COCO has
    five per image). **Image to text**: a hit at ``k`` when one of the image's own
    captions is among its ``k`` highest-scoring captions. **Text to image**: a hit at
    ``k`` when the caption's image is among its ``k`` highest-scoring images. Ties
    count against the query: an item that scores *equal* to the correct one ranks
    ahead of it, so a constant similarity matrix gets no credit.

    Reference: Radford et al., 2021, Table 13 (zero-shot retrieval protocol).

    Args:
        similarity: ``(I, T)`` floating scores, image rows and caption columns.
        caption_to_image: ``(T,)`` integer index of the image owning each caption;
            every image must own at least one caption.
        ks: the cut-offs ``k``.

    Returns:
        ``{"image_to_text_R@k": r, "text_to_image_R@k": r}`` for every ``k``, each a
        fraction in ``[0, 1]``.

    Raises:
        ValueError: on a non-2-D, empty or non-finite ``similarity``, a mis-shaped or
            out-of-range ``caption_to_image``, an image without captions, or bad ``ks``.
        TypeError: on a non-floating ``similarity`` or non-integer ``caption_to_image``.
    """
    check_scores("similarity", similarity, dims=2)
    num_images, num_texts = similarity.shape
    check_index("caption_to_image", caption_to_image, num_texts, num_images)
    ks = check_ks(ks)
    owner = caption_to_image.to(similarity.device)
    owns = owner[None, :] == torch.arange(num_images, device=similarity.device)[:, None]
    captionless = (~owns.any(dim=1)).nonzero().flatten()
    if captionless.numel():
        raise ValueError(
            f"every image must own at least one caption; images {captionless[:10].tolist()} "
            "own none in caption_to_image"
        )
    # Image to text: rank of the best own caption among the other images' captions.
    best = similarity.masked_fill(~owns, float("-inf")).amax(dim=1)
    rank_i2t = ((similarity >= best[:, None]) & ~owns).sum(dim=1)
    # Text to image: rank of the caption's image among the other images.
    correct = similarity[owner, torch.arange(num_texts, device=similarity.device)]
    rank_t2i = ((similarity >= correct[None, :]) & ~owns).sum(dim=0)
    out: dict[str, float] = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = float((rank_i2t < k).double().mean())
    for k in ks:
        out[f"text_to_image_R@{k}"] = float((rank_t2i < k).double().mean())
    return out
