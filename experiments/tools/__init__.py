"""Stand-alone tools beside the joint-vs-frozen harness: temporal valence/arousal on AFEW-VA
(``emologic va-temporal``) and Grad-CAM explanations of the face predicate on photos
(``emologic explain-face``). The harness never imports them; their commands do.
"""
