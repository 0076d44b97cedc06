% clip_sentiment.pl -- a video clip's emotion and sentiment, tied by a learnable
% polarity table.
%
% The multimodal fusion net (text + video + audio, neural/multimodal.py) has two
% heads, and each is a neural predicate here: the emotion head over the seven
% emotions and the sentiment head over negative/neutral/positive. A plain
% network answers the two independently; this program ties them together.
%
% Query interface (shared by every clip program in this directory):
%   emotion(Clip, E)              the clip's emotion is E
%   sentiment(Clip, S)            the clip's sentiment is S
%   sentiment_via(Clip, Src, S)   ... and the sentiment came from source Src (explanations)
%   label(Clip, E, S)             both at once: the training query, so the loss uses both labels
% Clip is the sample placeholder; the fusion net's input is reached as tensor(clip(Clip)).
%
% Polarity. polarity(E, S) is one learnable annotated disjunction per emotion:
% P(sentiment = S | emotion = E). The values below are the documented starting
% point (joy-like emotions positive; anger, disgust, fear and sadness negative;
% neutral neutral; surprise either way); training moves them.
%
% Sentiment sources. Exactly one source gives the clip's sentiment, chosen with
% learnable probability: the sentiment head reading the clip directly (head), or
% the clip's emotion passed through the polarity table (emotion):
%   P(S | clip)    = t_head * P_head(S) + t_emotion * sum_E P_emo(E) * polarity(E, S)
%   P(E, S | clip) = P_emo(E) * (t_head * P_head(S) + t_emotion * polarity(E, S))
% Only the clip's own emotion's polarity choice ever matters, because the
% emotion head's outcomes are mutually exclusive.

nn(multimodal_emotion, [X], E, [angry, disgust, fear, happy, sad, surprise, neutral]) :: emotion_head(X, E).
nn(multimodal_sentiment, [X], S, [negative, neutral, positive]) :: sentiment_head(X, S).

t(0.8)::polarity(angry, negative); t(0.1)::polarity(angry, neutral); t(0.1)::polarity(angry, positive).
t(0.8)::polarity(disgust, negative); t(0.1)::polarity(disgust, neutral); t(0.1)::polarity(disgust, positive).
t(0.8)::polarity(fear, negative); t(0.1)::polarity(fear, neutral); t(0.1)::polarity(fear, positive).
t(0.1)::polarity(happy, negative); t(0.1)::polarity(happy, neutral); t(0.8)::polarity(happy, positive).
t(0.8)::polarity(sad, negative); t(0.1)::polarity(sad, neutral); t(0.1)::polarity(sad, positive).
t(0.45)::polarity(surprise, negative); t(0.1)::polarity(surprise, neutral); t(0.45)::polarity(surprise, positive).
t(0.1)::polarity(neutral, negative); t(0.8)::polarity(neutral, neutral); t(0.1)::polarity(neutral, positive).

t(0.5)::sentiment_source(head); t(0.5)::sentiment_source(emotion).

emotion(Clip, E) :- emotion_head(tensor(clip(Clip)), E).
sentiment_via(Clip, head, S) :- sentiment_source(head), sentiment_head(tensor(clip(Clip)), S).
sentiment_via(Clip, emotion, S) :- sentiment_source(emotion), emotion(Clip, E), polarity(E, S).
sentiment(Clip, S) :- sentiment_via(Clip, _, S).
label(Clip, E, S) :- emotion(Clip, E), sentiment(Clip, S).
