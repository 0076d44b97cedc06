% context_selection.pl -- source selection conditioned on observable context.
%
% One learnable annotated disjunction per context, so the program can learn
% *when* to trust a face and when the scene. The context key (see
% pipelines/context.py) is the number of detected faces (0..3) and the size
% bucket of the largest face (small/large; threshold configurable there):
% n0, n1_small, n1_large, n2_small, n2_large, n3_small, n3_large.
%
% Query interface: emotion/3, via/4, selected/3, valid/2 (see source_selection.pl).
%
% Absent faces. Each context's disjunction ranges only over the sources that
% exist in that context (n1_* cannot choose face2), so no probability mass is
% ever put on a missing face, valid/2 is certain, and
%   P(E | img) = sum_{s in sources(ctx)} t_{ctx,s} * P_s(E).
% A face's neural predicate is only grounded for slots that exist, so no
% network ever sees a missing face and no dummy tensor exists.

nn(scene2emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: scene_emotion(X, E).
nn(face_emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: face_emotion(X, E).

trust(n0, scene).
t(0.5)::trust(n1_small, scene); t(0.5)::trust(n1_small, face1).
t(0.5)::trust(n1_large, scene); t(0.5)::trust(n1_large, face1).
t(0.34)::trust(n2_small, scene); t(0.33)::trust(n2_small, face1); t(0.33)::trust(n2_small, face2).
t(0.34)::trust(n2_large, scene); t(0.33)::trust(n2_large, face1); t(0.33)::trust(n2_large, face2).
t(0.25)::trust(n3_small, scene); t(0.25)::trust(n3_small, face1); t(0.25)::trust(n3_small, face2); t(0.25)::trust(n3_small, face3).
t(0.25)::trust(n3_large, scene); t(0.25)::trust(n3_large, face1); t(0.25)::trust(n3_large, face2); t(0.25)::trust(n3_large, face3).

source_emotion(Img, scene, E) :- scene_emotion(tensor(scene(Img)), E).
source_emotion(Img, face1, E) :- face_emotion(tensor(face1(Img)), E).
source_emotion(Img, face2, E) :- face_emotion(tensor(face2(Img)), E).
source_emotion(Img, face3, E) :- face_emotion(tensor(face3(Img)), E).

selected(_, Ctx, S) :- trust(Ctx, S).
valid(Img, Ctx) :- selected(Img, Ctx, _).
via(Img, Ctx, S, E) :- selected(Img, Ctx, S), source_emotion(Img, S, E).
emotion(Img, Ctx, E) :- via(Img, Ctx, _, E).
