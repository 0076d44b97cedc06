% va_selection.pl -- context-conditioned source selection with a valence/arousal source.
%
% Like context_selection.pl, plus a fifth source "va": a valence/arousal network
% (MC-dropout mean and variance -> Gaussian mass per bin, see neural/va.py) gives
% distributions over three valence bins and three arousal bins, and a learnable
% table P(emotion | valence bin, arousal bin) -- the circumplex -- turns them
% into an emotion:
%   P_va(E | img) = sum_{v,a} P(v | img) P(a | img) P(E | v, a).
% The two bin distributions are treated as independent given the image (the
% regressor's heads are conditionally independent given the features).
%
% Query interface: emotion/3, via/4, selected/3, valid/2 (see source_selection.pl).
% Absent faces are handled as in context_selection.pl: each context's
% disjunction ranges only over the sources that exist there.
%
% The starting point of the circumplex table (learned from there): each row puts
% 0.4 on its prototypical emotions after Russell's circumplex (negative/high:
% angry, fear; negative/medium: disgust, sad; negative/low: sad; neutral/high:
% surprise; neutral/*: neutral; positive/high: happy, surprise; positive/medium:
% happy; positive/low: happy, neutral) and spreads 0.6 uniformly.

nn(scene2emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: scene_emotion(X, E).
nn(face_emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: face_emotion(X, E).
nn(va_valence, [X], V, [negative, neutral, positive]) :: valence_bin(X, V).
nn(va_arousal, [X], A, [low, medium, high]) :: arousal_bin(X, A).

t(0.5)::trust(n0, scene); t(0.5)::trust(n0, va).
t(0.34)::trust(n1_small, scene); t(0.33)::trust(n1_small, face1); t(0.33)::trust(n1_small, va).
t(0.34)::trust(n1_large, scene); t(0.33)::trust(n1_large, face1); t(0.33)::trust(n1_large, va).
t(0.25)::trust(n2_small, scene); t(0.25)::trust(n2_small, face1); t(0.25)::trust(n2_small, face2); t(0.25)::trust(n2_small, va).
t(0.25)::trust(n2_large, scene); t(0.25)::trust(n2_large, face1); t(0.25)::trust(n2_large, face2); t(0.25)::trust(n2_large, va).
t(0.2)::trust(n3_small, scene); t(0.2)::trust(n3_small, face1); t(0.2)::trust(n3_small, face2); t(0.2)::trust(n3_small, face3); t(0.2)::trust(n3_small, va).
t(0.2)::trust(n3_large, scene); t(0.2)::trust(n3_large, face1); t(0.2)::trust(n3_large, face2); t(0.2)::trust(n3_large, face3); t(0.2)::trust(n3_large, va).

t(0.085714)::circumplex(negative, low, angry); t(0.085714)::circumplex(negative, low, disgust); t(0.085714)::circumplex(negative, low, fear); t(0.085714)::circumplex(negative, low, happy); t(0.485714)::circumplex(negative, low, sad); t(0.085714)::circumplex(negative, low, surprise); t(0.085714)::circumplex(negative, low, neutral).
t(0.085714)::circumplex(negative, medium, angry); t(0.285714)::circumplex(negative, medium, disgust); t(0.085714)::circumplex(negative, medium, fear); t(0.085714)::circumplex(negative, medium, happy); t(0.285714)::circumplex(negative, medium, sad); t(0.085714)::circumplex(negative, medium, surprise); t(0.085714)::circumplex(negative, medium, neutral).
t(0.285714)::circumplex(negative, high, angry); t(0.085714)::circumplex(negative, high, disgust); t(0.285714)::circumplex(negative, high, fear); t(0.085714)::circumplex(negative, high, happy); t(0.085714)::circumplex(negative, high, sad); t(0.085714)::circumplex(negative, high, surprise); t(0.085714)::circumplex(negative, high, neutral).
t(0.085714)::circumplex(neutral, low, angry); t(0.085714)::circumplex(neutral, low, disgust); t(0.085714)::circumplex(neutral, low, fear); t(0.085714)::circumplex(neutral, low, happy); t(0.085714)::circumplex(neutral, low, sad); t(0.085714)::circumplex(neutral, low, surprise); t(0.485714)::circumplex(neutral, low, neutral).
t(0.085714)::circumplex(neutral, medium, angry); t(0.085714)::circumplex(neutral, medium, disgust); t(0.085714)::circumplex(neutral, medium, fear); t(0.085714)::circumplex(neutral, medium, happy); t(0.085714)::circumplex(neutral, medium, sad); t(0.085714)::circumplex(neutral, medium, surprise); t(0.485714)::circumplex(neutral, medium, neutral).
t(0.085714)::circumplex(neutral, high, angry); t(0.085714)::circumplex(neutral, high, disgust); t(0.085714)::circumplex(neutral, high, fear); t(0.085714)::circumplex(neutral, high, happy); t(0.085714)::circumplex(neutral, high, sad); t(0.485714)::circumplex(neutral, high, surprise); t(0.085714)::circumplex(neutral, high, neutral).
t(0.085714)::circumplex(positive, low, angry); t(0.085714)::circumplex(positive, low, disgust); t(0.085714)::circumplex(positive, low, fear); t(0.285714)::circumplex(positive, low, happy); t(0.085714)::circumplex(positive, low, sad); t(0.085714)::circumplex(positive, low, surprise); t(0.285714)::circumplex(positive, low, neutral).
t(0.085714)::circumplex(positive, medium, angry); t(0.085714)::circumplex(positive, medium, disgust); t(0.085714)::circumplex(positive, medium, fear); t(0.485714)::circumplex(positive, medium, happy); t(0.085714)::circumplex(positive, medium, sad); t(0.085714)::circumplex(positive, medium, surprise); t(0.085714)::circumplex(positive, medium, neutral).
t(0.085714)::circumplex(positive, high, angry); t(0.085714)::circumplex(positive, high, disgust); t(0.085714)::circumplex(positive, high, fear); t(0.285714)::circumplex(positive, high, happy); t(0.085714)::circumplex(positive, high, sad); t(0.285714)::circumplex(positive, high, surprise); t(0.085714)::circumplex(positive, high, neutral).

source_emotion(Img, scene, E) :- scene_emotion(tensor(scene(Img)), E).
source_emotion(Img, face1, E) :- face_emotion(tensor(face1(Img)), E).
source_emotion(Img, face2, E) :- face_emotion(tensor(face2(Img)), E).
source_emotion(Img, face3, E) :- face_emotion(tensor(face3(Img)), E).
source_emotion(Img, va, E) :- valence_bin(tensor(va(Img)), V), arousal_bin(tensor(va(Img)), A), circumplex(V, A, E).

selected(_, Ctx, S) :- trust(Ctx, S).
valid(Img, Ctx) :- selected(Img, Ctx, _).
via(Img, Ctx, S, E) :- selected(Img, Ctx, S), source_emotion(Img, S, E).
emotion(Img, Ctx, E) :- via(Img, Ctx, _, E).
