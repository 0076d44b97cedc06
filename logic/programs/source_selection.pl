% source_selection.pl -- the program of the source notes, as written.
%
% Exactly one of four sources is chosen (scene, face1, face2, face3), each with a
% learnable probability t(_); the image's emotion is the emotion that the chosen
% source's network predicts.
%
% Query interface (shared by every image program in this directory):
%   emotion(Img, Ctx, E)    the image's emotion is E (and the chosen source exists)
%   via(Img, Ctx, S, E)     ... and it came from source S        (explanations)
%   selected(Img, Ctx, S)   source S was chosen and exists        (no networks)
%   valid(Img, Ctx)         the chosen source exists              (normaliser)
% Img is the sample placeholder; tensors are reached as tensor(Source(Img)).
% Ctx is the observable context key (pipelines/context.py): n0, n1_small, ...
% The engines report P(emotion | image) = P(emotion(Img,Ctx,E)) / P(valid(Img,Ctx)).
%
% Absent faces. A face that was not detected has no tensor at all. available/2
% is checked *before* the face's neural predicate is called, so the grounding
% for an image with k faces never mentions face slots beyond k: no network is
% evaluated on a missing face and no dummy tensor exists. The global choice
% below still ranges over all four sources; choosing an absent one makes
% valid/2 false, and the answer is conditioned on valid/2:
%   P(E | img) = sum_{s available} t_s * P_s(E) / sum_{s available} t_s,
% i.e. the seed's probabilities renormalised over the sources that exist.

nn(scene2emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: scene_emotion(X, E).
nn(face_emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: face_emotion(X, E).

t(0.25)::choose(scene); t(0.25)::choose(face1); t(0.25)::choose(face2); t(0.25)::choose(face3).

faces(n0, 0).
faces(n1_small, 1). faces(n1_large, 1).
faces(n2_small, 2). faces(n2_large, 2).
faces(n3_small, 3). faces(n3_large, 3).

available(scene, _).
available(face1, Ctx) :- faces(Ctx, N), N >= 1.
available(face2, Ctx) :- faces(Ctx, N), N >= 2.
available(face3, Ctx) :- faces(Ctx, N), N >= 3.

source_emotion(Img, scene, E) :- scene_emotion(tensor(scene(Img)), E).
source_emotion(Img, face1, E) :- face_emotion(tensor(face1(Img)), E).
source_emotion(Img, face2, E) :- face_emotion(tensor(face2(Img)), E).
source_emotion(Img, face3, E) :- face_emotion(tensor(face3(Img)), E).

selected(_, Ctx, S) :- choose(S), available(S, Ctx).
valid(Img, Ctx) :- selected(Img, Ctx, _).
via(Img, Ctx, S, E) :- selected(Img, Ctx, S), source_emotion(Img, S, E).
emotion(Img, Ctx, E) :- via(Img, Ctx, _, E).
