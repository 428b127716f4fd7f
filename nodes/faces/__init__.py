"""Face restoration (the WebUI's "Restore faces"): detection, alignment, restoration and paste-back.

- :mod:`.geometry`: the 5-point template, similarity alignment, crops, the soft paste-back mask;
- :mod:`.detection`: facexlib's RetinaFace with weights from ``<models_dir>/facedetection/``;
- :mod:`.restorers`: GFPGAN / RestoreFormer / CodeFormer through spandrel;
- :mod:`.nodes`: LoadFaceRestoreModel, LoadFaceDetector, RestoreFaces.

facexlib comes with the ``faces`` extra, CodeFormer's architecture with the ``codeformer`` extra; without them
the nodes fail with the command that installs them.
"""
