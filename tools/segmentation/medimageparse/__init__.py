"""Engine `medimageparse`: the MedImageParse model behind an Azure AI Foundry online endpoint.

The scoring contract (Azure AI Foundry docs, "How to use MedImageParse"; Microsoft's
healthcareai-examples MedImageParseClient):

    POST <scoring URL>   Authorization: Bearer <key>
    {"input_data": {"columns": ["image", "text"], "index": [0, 1, ...],
                    "data": [[<base64 PNG, 1024x1024 RGB>, "left lung & right lung"], ...]}}
    -> [{"image_features": "{\"data\": <base64 of the raw array buffer>, \"shape\": [2, 1024, 1024],
                             \"dtype\": \"uint8\"}",
         "text_features": ["lung", "lung"]}, ...]            one object per row, in order

Each ``&``-separated sentence yields one mask (0-255; a pixel is inside at 128 or more) and
one category. The 3D variant (MedImageParse 3D) takes a base64 NIfTI volume and one target
per request and answers ``{"nifti_file": "{\"data\": <base64 .nii.gz>}"}``.

Only pixels leave the hospital: the request builders take arrays, never a DICOM dataset, and
no identifier goes into a URL, header or body. The NIfTI sent in 3D mode carries spacing and
orientation only (its origin is zeroed, its description empty).

How a CT slice becomes the model's image and back is described in view.py; left and right
are checked against the geometry afterwards (engine.py).

Modules: wire.py (request and response bodies), client.py (the HTTP client, with the
project's one retry loop, tools/http), view.py (2D: slice <-> model image), nifti.py (3D:
the volume as NIfTI and back), engine.py (the engine).
"""
