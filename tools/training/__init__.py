"""Fine-tuning from approved contours: gather cases from the PACS, keep them on disk, train a MONAI UNet.

`gather` finds CT series with an approved RTSTRUCT / SEG (or a structure set a person made),
`dataset` stores each pair as a case in the monai-bundle engine's frame, and `train` trains or
fine-tunes a UNet and writes a MONAI bundle that the `monai-bundle` engine loads.
"""
