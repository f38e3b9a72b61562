"""A corpus of plain English sentences, the non-keyword speech of the TTS source's long recordings
(kws.prepare.tts.streams), and the filter that keeps the sentences free of the keywords.

The sentences avoid the Speech Commands words and their homophones ("to", "for", "know", "write"), so that
few are lost to any keyword list; `keyword_free` drops, word by word, any sentence that still says a keyword
or sounds like one (the comparison of kws.prepare.tts.phonemes, over as many consecutive words as the
keyword has).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kws.prepare.tts.phonemes import Pronunciation, pronunciations, same_sound

TOKEN_RE = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")  # a word of a sentence or keyword ("don't", "7" of "7-up")

SENTENCES = tuple(
    line.strip()
    for line in """
    The weather was cold and grey all morning.
    She painted the kitchen a pale shade of green.
    My brother bought a new bicycle last week.
    The children played in the garden until dark.
    We watched the boats sail across the harbor.
    A small bakery opened near the station.
    He always drinks coffee with a little milk.
    The library closes early every Friday.
    Please pass the salt and the pepper.
    The old bridge was built of grey stone.
    They planted roses along the garden wall.
    Our neighbors have a very noisy parrot.
    The train was late because of the snow.
    I found an old photograph in the drawer.
    The museum has a large collection of maps.
    Rain fell softly against the window all night.
    She wrote a long letter in blue ink.
    The market sells fresh fish and vegetables.
    He fixed the broken chair with some glue.
    The sky turned orange as the sun set.
    We had soup and bread at the little cafe.
    The river was calm and the water was clear.
    Please close the window when you leave.
    The teacher explained the lesson very slowly.
    A gentle breeze moved the tall grass.
    My grandmother knits warm socks every winter.
    The concert was held in a huge hall.
    He carried a heavy box across the street.
    The garden smells of lavender in summer.
    She keeps her keys in a small wooden box.
    The children laughed at the funny clown.
    They spent the weekend at a quiet lake.
    The coffee shop was crowded at lunchtime.
    I like the sound of waves at the beach.
    The farmer milked the cows at dawn.
    Our team practiced in the rain again.
    The bus was full of students and tourists.
    A bright moon shone above the valley.
    She baked a chocolate cake with cream.
    The paint was still wet when we arrived.
    He reads the newspaper with his breakfast.
    The mountain path was steep and narrow.
    We waited an hour at the busy airport.
    A gray cloud covered the whole sky.
    The actors bowed as the audience clapped.
    The shop sells maps, pens and notebooks.
    My sister plays the violin very well.
    Snow covered the roofs of the village.
    The soup tasted of garlic and ginger.
    They built a sandcastle near the water.
    The museum guide spoke very clearly.
    I lost my umbrella somewhere in the city.
    The kettle whistled in the quiet kitchen.
    The orchestra played a beautiful waltz.
    He bought apples, pears and a melon.
    The mail arrived later than usual today.
    A little boat drifted across the bay.
    The students listened carefully in class.
    Our car needs new tires before winter.
    She ran along the beach at sunrise.
    The lamp cast a warm light in the room.
    The baker sold every loaf by noon.
    We heard thunder far away in the hills.
    The garden gate was painted bright blue.
    His jacket was far warmer than he needed.
    The cook chopped onions and carrots.
    We drove along the coast in silence.
    The puppy chewed an old slipper.
    My uncle grows tomatoes in his greenhouse.
    The clock in the hall struck noon.
    She sang a song about the sea.
    The tourists took pictures of the castle.
    An owl called softly in the dark forest.
    The doctor said the cough would pass soon.
    The little girl drew a picture of a horse.
    Fresh bread is best with butter and honey.
    The wind blew the leaves across the lawn.
    Our holiday began with a long flight.
    The waiter brought a jug of cold water.
    He spent the evening reading poetry.
    The painter mixed blue and yellow paint.
    A family of ducks swam across the pond.
    The bells rang across the quiet town.
    We picked strawberries in the field.
    The lecture lasted nearly an hour.
    Her garden is full of sunflowers.
    The hotel room had a view of the sea.
    The fisherman mended his nets by the shore.
    The bakery smells wonderful in the morning.
    They danced all evening at the wedding.
    The pianist practiced the same piece again and again.
    A thick fog rolled in from the ocean.
    The soldiers marched across the square.
    The shepherd counted his sheep at dusk.
    The little village has a single shop.
    The candle flickered in the draft.
    He whistled a tune as he walked.
    The students wrote essays about history.
    She wore a red scarf and a woolen hat.
    Most of the guests arrived by taxi.
    The farmer sold eggs at the market.
    The cinema was showing an old film.
    The waves crashed against the rocks.
    His voice echoed in the empty hall.
    We had dinner in the garden last night.
    The frost made the grass sparkle.
    A rabbit hopped across the meadow.
    The lighthouse guided the ships home.
    She poured tea into the china cups.
    The path wound through the pine trees.
    The library has thousands of old books.
    The chef tasted the sauce with a spoon.
    The storm knocked the power out last night.
    My friend lives in a small flat in the city.
    Children splashed in the shallow water.
    The autumn leaves were red and gold.
    The post office is beside the bank.
    We walked along the canal after lunch.
    The cheese was sharp and a little salty.
    She keeps a diary of her travels.
    The engine made a strange rattling noise.
    The museum was quiet in the early morning.
    He painted the fence white last summer.
    The musicians tuned their instruments.
    The kitten slept in a basket by the fire.
    A long queue formed outside the bakery.
    The lake froze solid in January.
    They sailed a small boat across the bay.
    The garden hose sprayed water everywhere.
    The children built a snowman in the yard.
    The shop assistant wrapped the gift in paper.
    He keeps his bicycle in the shed.
    We listened quietly as the rain fell.
    The old man fed the pigeons in the park.
    The fields were golden in late summer.
    She ordered a salad and a glass of juice.
    The museum cafe serves excellent soup.
    The sun was warm and the sky was clear.
    Our teacher loves poetry and music.
    The puppy chased its tail in circles.
    A heavy truck rumbled along the road.
    The flowers in the vase smelled sweet.
    The city was busy with traffic all day.
    He planted potatoes in the spring.
    The evening air was cool and fresh.
    The choir sang in the old church.
    She found a shell in the sandy beach.
    A squirrel buried nuts under the oak.
    The waiter cleared the plates away.
    We spent the afternoon at the zoo.
    The baby giggled at the colorful balloons.
    His new shoes were shiny and black.
    The carpenter measured the board twice.
    The moon was hidden behind the clouds.
    The band played late into the night.
    The market square was full of stalls.
    The kitchen window looks out over the fields.
    The boy kicked the ball over the fence.
    She hung the washing out in the sun.
    The river flows gently through the valley.
    A fox crept quietly across the field.
    Her cousin works at the local hospital.
    The students cheered at the end of term.
    The castle walls were thick and high.
    He sipped his tea and read the paper.
    The bakery sells cakes, pies and biscuits.
    The lamp flickered and then went dark.
    We visited an old friend in the country.
    The painting hangs in the main hall.
    Ice cream melts quickly in the heat.
    The streets were wet after the storm.
    The little shop sells toys and games.
    My aunt makes the best apple pie.
    The gardener trimmed the hedges neatly.
    A seagull stole a chip from the table.
    The bus driver waved at the children.
    The museum shows ancient pottery and coins.
    She read the whole novel in a weekend.
    The pond is full of frogs in spring.
    The train crossed the bridge slowly.
    His phone rang during the meeting.
    We bought fresh flowers at the market.
    The cold wind made our ears ache.
    A young deer stood at the edge of the wood.
    The kitchen was warm and smelled of bread.
    The players shook hands after the match.
    The valley was filled with morning mist.
    She carried a basket of apples home.
    The ferry leaves the harbor every hour.
    Our garden needs rain after the dry spell.
    The soup was thick and full of beans.
    The wind howled around the cottage all night.
    Please remember the milk and the eggs.
    The map showed a narrow path along the cliffs.
    Her brother studies chemistry at college.
    A warm fire burned in the fireplace.
    The stars were bright above the desert.
    The nurse checked the patient every hour.
    The children sat quietly and listened.
    A single candle lit the dark room.
    We sheltered from the rain under an old oak.
    The mechanic repaired the old engine.
    The bread was still warm from the oven.
    My cousin is getting married in June.
    The sheep grazed in the green pasture.
    The old clock ticked loudly in the hall.
    She planted tulips by the front door.
    The fishermen returned with a heavy catch.
    The room was filled with laughter and music.
    He wore a heavy coat against the cold.
    The island is famous because of its beaches.
    The queue moved slowly at the ticket office.
    The paint dried quickly in the sun.
    Our neighbor has a beautiful garden.
    The boat rocked gently in the harbor.
    The soup needs a little more salt.
    The singer thanked the crowd at the end.
    We collected shells along the shore.
    The forest was dark and very quiet.
    A butterfly landed softly in the flowers.
    The students finished their exams today.
    The bakery opens early every morning.
    The tea was very hot and the cake was stale.
    She locked the door and switched the light out.
    The wind carried the smell of the sea.
    The kids made paper boats in the rain.
    Thunder rolled across the dark sky.
    The old piano was badly out of tune.
    He counted the coins in his pocket.
    The teacher wrote the answer in chalk.
    The waves were huge after the storm.
    The village fair takes place every summer.
    The hikers rested beside a small stream.
    Her dress was made of soft blue silk.
    The museum opens at ten in the morning.
    We watched the sunset from the hill.
    The postman delivered a large parcel.
    The leaves turned yellow in October.
    A flock of geese flew over the lake.
    The shop was closed because of the holiday.
    The lemonade was cold and very sweet.
    The little cottage had a thatched roof.
    They walked along the riverbank at dusk.
    The kitchen table was covered in flour.
    The owl sat silently in the old barn.
    The market was busy despite the rain.
    The campers lit a fire as night fell.
    She borrowed a book about ancient Rome.
    The bells of the church rang at noon.
    The garden was quiet apart from the bees.
    His handwriting is very hard and untidy.
    The city lights shone across the river.
    A gentle rain began in the afternoon.
    The pasta was served with a tomato sauce.
    The train arrived exactly at noon.
    We planted herbs in small clay pots.
    The cows walked slowly across the field.
    The cellar was cold and very damp.
    She hummed a tune while she cooked.
    The actors rehearsed the play all week.
    The hill was covered with purple heather.
    Our school has a large playground.
    The swallows returned in early spring.
    The clouds cleared and the sun came out.
    A policeman directed the traffic.
    The ice cream van played a little tune.
    The chef sliced the bread very thinly.
    The tide came in over the sand.
    He keeps his tools in a metal box.
    The orchard is full of apple trees.
    Her laugh filled the whole room.
    The coffee was strong and very bitter.
    The farmer drove his tractor across the field.
    We found a quiet spot by the river.
    The candles made the room feel warm.
    The lake was as smooth as glass.
    The children sang songs around the fire.
    The baker dusted the loaves with flour.
    The cold rain made everyone hurry home.
    The writer finished her novel in spring.
    A small boat was tied beside the jetty.
    The garden path was lined with lavender.
    The sailors raised the sails at dawn.
    The plums were ripe and very sweet.
    My father fixed the roof last weekend.
    The bookshop has a cozy reading corner.
    A puppy barked somewhere in the distance.
    The fog lifted slowly from the valley.
    We ordered pizza and watched a film.
    The mountain air was thin and cold.
    The tourists asked the way at the station.
    The twins wore matching yellow raincoats.
    The kettle boiled and she made some tea.
    A robin sang in the apple orchard.
    The boat sailed past the lighthouse.
    The soup simmered slowly all afternoon.
    The meeting lasted longer than expected.
    The students painted a mural in the hall.
    The sand was hot under our feet.
    The horse galloped across the meadow.
    Her grandfather tells wonderful stories.
    The cafe serves pancakes with maple syrup.
    The pond froze and the children skated.
    The farmer checked the fences every morning.
    We heard the ocean from our window.
    The heavy rain flooded the streets.
    The artist sketched the old harbor.
    A cool breeze came through the open window.
    The kitchen smelled of cinnamon and apples.
    The shop sells cheese from the mountains.
    The crowd cheered as the runners passed.
    The lamp in the window burned all night.
    The gardener raked the autumn leaves.
    My friend painted her bedroom lilac.
    The church tower is the tallest in town.
    The rain stopped and a rainbow appeared.
    The picnic basket was full of sandwiches.
    The stream ran clear over the pebbles.
    He bought a ticket at the station.
    The library was warm and very quiet.
    A fisherman sat patiently by the lake.
    The trees swayed in the strong wind.
    The baker makes bread every single night.
    The children counted the stars in the sky.
    The market opens early in summer.
    She wrapped the present in gold paper.
    The roads were icy after the frost.
    Our train passed through many small towns.
    The song was played at the wedding.
    The mountains were covered with snow.
    The garden bench was wet with dew.
    He poured milk into a large glass.
    The town hall clock is always slow.
    A gull circled high above the boats.
    The old barn was full of hay.
    The pupils read quietly in the library.
    The stew was rich and full of flavor.
    We watched the rain from the porch.
    The musicians played in the town square.
""".splitlines()
    if line.strip()
)


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def keyword_free(keywords: Sequence[str], sentences: Sequence[str] = SENTENCES) -> list[str]:
    """The sentences in which no run of words is a keyword or sounds like one, in their order."""
    words = {t for s in sentences for t in tokens(s)}
    prons = pronunciations([*words, *keywords])
    spans = [(tokens(k), prons[k]) for k in keywords]
    return [s for s in sentences if not any(_says(tokens(s), kw, pron, prons) for kw, pron in spans)]


def _says(words: list[str], keyword: list[str], pron: Pronunciation, prons: dict[str, Pronunciation]) -> bool:
    n = len(keyword)
    for i in range(len(words) - n + 1):
        window = words[i : i + n]
        joined = tuple("".join(parts) for parts in zip(*(prons[w] for w in window), strict=True))
        if window == keyword or same_sound(joined, pron):
            return True
    return False
